"""Dagster assets and checks, one module per domain, each exporting its own ``defs``
(``Definitions``): ``batches`` (manifest, rendered shards and their label tables, the
dataset), ``quality`` (a batch's dataset tests as blocking checks, and the export they
guard), ``exports`` (training exports), ``ingest`` (real datasets and model predictions
brought in), ``evaluation`` (a model's predictions evaluated per slice, its model tests as
blocking checks, and its release), ``samples`` (one job from the UI). ``storage`` holds the
storage resource they share. Assets are thin: they call the platform (``vario``) and the SDK
(``generators``) and hold no logic of their own. ``dagster_project.definitions`` merges the
domains and wires resources.
"""
