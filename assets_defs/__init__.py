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

import warnings

import dagster as dg

# Dataset tests and shard checks are partitioned like their assets, so each result belongs to
# its batch (or shard) in the UI. Dagster 1.13 (pinned below 1.14) marks ``partitions_def`` on
# an ``AssetCheckSpec`` as a preview and warns each time the definitions load: said once here.
warnings.filterwarnings(
    "ignore",
    message="Specifying a partitions_def on an AssetCheckSpec",
    category=dg.PreviewWarning,
)
