"""The API's data folder as a working copy of S3, as every Vario machine's is when the data
lives there (``vario serve`` with ``VARIO_S3_BUCKET``): before a request reads a batch, the
files it reads are brought in from S3 (only those missing here, and at most once a second
per batch however many clients poll it); a submitted spec goes to the S3 inbox that the
inbox sensor reads, and an export made here is published beside the batch.

The transfers are the storage resource's (dagster-aws, ``assets_defs.storage``), handed to
the app by ``dagster_project.api``, since this package does not import Dagster. Without S3
there is no mirror and every function here reads the local folder only."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Protocol

import yaml
from fastapi import Request

from vario.api import status
from vario.quality import checks as quality
from vario.store.layout import DataStore


class Mirror(Protocol):
    """What the API needs of the S3 store (``assets_defs.storage.StorageResource``)."""

    def batch_names(self) -> set[str]: ...
    def fetch(self, *paths: Path) -> None: ...
    def fetch_batch(self, batch: str, *, archives: bool = True) -> None: ...
    def listed(self, folder: Path) -> set[str]: ...
    def submit(self, spec_path: Path) -> str: ...
    def publish(self, *paths: Path) -> None: ...
    def publish_tree(self, folder: Path) -> None: ...


def mirror(request: Request) -> Mirror | None:
    return request.app.state.mirror


def batches(store: DataStore, remote: Mirror | None) -> list[str]:
    """The recorded batches: here and, with a mirror, on S3 (their specs and manifests
    brought in)."""
    if remote is not None:

        def pull() -> bool:
            for name in remote.batch_names():
                remote.fetch(store.spec_path(name), store.manifest_path(name))
            return True

        status.fresh(("batches", str(store.root)), pull)
    return store.batches()


def bring(store: DataStore, remote: Mirror | None, batch: str) -> None:
    """A recorded batch's files up to date here: tables, archives, failure records, tests."""
    if remote is None:
        return

    def pull() -> bool:
        remote.fetch_batch(batch)
        remote.fetch(quality.results_path(store, batch), store.cancel_path(batch))
        return True

    status.fresh(("mirror", str(store.root), batch), pull)


def submit(store: DataStore, remote: Mirror | None, spec: dict) -> None:
    """Queue a spec: in the S3 inbox with a mirror, else in the local one."""
    if remote is None:
        store.submit_spec(spec)
        return
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / f"{spec['name']}.yaml"
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        remote.submit(path)


def queued(store: DataStore, remote: Mirror | None, name: str) -> bool:
    """Whether a spec of that name waits in the inbox (here or on S3)."""
    spec = f"{name}.yaml"
    return (store.inbox / spec).exists() or (
        remote is not None and spec in remote.listed(store.inbox)
    )


def rejection(store: DataStore, remote: Mirror | None, name: str) -> Path | None:
    """The errors file of a spec the sensor refused, or None."""
    path = store.inbox / "rejected" / f"{name}.yaml.error.txt"
    if remote is not None:
        remote.fetch(path)
    return path if path.exists() else None
