"""Where archives and tables go. The resource type lives beside the assets that use it;
``dagster_project.resources`` configures it from the environment."""

from pathlib import Path

import dagster as dg

from generators.datastore import DataStore


class StorageResource(dg.ConfigurableResource):
    """A local data folder laid out as ``generators.datastore`` describes."""

    root: str

    def path(self, *parts: str) -> Path:
        path = Path(self.root).joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def store(self) -> DataStore:
        return DataStore(Path(self.root))
