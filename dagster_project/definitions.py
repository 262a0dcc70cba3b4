"""The one place where Vario's Dagster ``Definitions`` are assembled."""

from __future__ import annotations

import dagster as dg

from assets_defs import samples
from dagster_project import resources

defs = dg.Definitions(
    assets=dg.load_assets_from_modules([samples]),
    resources={"storage": resources.storage()},
)
