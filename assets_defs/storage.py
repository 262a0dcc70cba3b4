"""Where archives and tables go. The resource type lives beside the assets that use it;
``dagster_project.resources`` configures it from the environment."""

from __future__ import annotations

from pathlib import Path

import dagster as dg


class StorageResource(dg.ConfigurableResource):
    """A local data folder (S3 comes with the orchestration work)."""

    root: str

    def path(self, *parts: str) -> Path:
        path = Path(self.root).joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path
