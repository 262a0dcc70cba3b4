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

# Who answers for every asset: shown beside each in the UI (Dagster 1.13 has owners on
# sensors, schedules and jobs only as a beta).
OWNERS = ["team:vario"]


def tags(domain: str, layer: str, **more: str) -> dict[str, str]:
    """An asset's tags, for filtering in the UI: its domain (the module that defines it), its
    layer (``plan``, ``render``, ``labels``, ``tests``, ``export``, ``ingest``,
    ``evaluation``) and any more (the renderer)."""
    return {"domain": domain, "layer": layer, **more}


def generators_version() -> str:
    """The code version of the assets a generator's code makes: every installed generator's
    name and version (``falling_objects-1.1.0,tabletop-1.1.0``), so that a new generator
    version shows their materializations as made by older code."""
    from generators.contract import registry

    return ",".join(f"{name}-{cls.version}" for name, cls in registry.available().items())


def with_code_references(assets: list[dg.AssetsDefinition]) -> list[dg.AssetsDefinition]:
    """The assets with links to their source file and line, shown on each asset's page.
    Dagster 1.13 calls that API beta and warns at each load: silenced for this call only."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", dg.BetaWarning)
        return dg.with_source_code_references(assets)
