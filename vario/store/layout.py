"""Where a Vario data folder keeps things. One layout, used by the CLI, Dagster and benchmarks:

inbox/                       specs to submit (*.yaml, *.yml, *.json)
inbox/rejected/NAME          an invalid spec, with NAME.error.txt beside it
inbox/processed/NAME         a spec that was planned
batches/BATCH/spec.json      the accepted spec
batches/BATCH/manifest.parquet   one row per job (job id, shard, seed, parameters)
archives/BATCH/JOB_ID.zip    job archives (and JOB_ID.failed.json for failed jobs)
tables/TABLE/batch=BATCH/SHARD.parquet   label tables, hive-partitioned by batch
previews/BATCH/NAME.jpg      contact sheets of frames: NAME is a shard key or the batch
real/dataset=NAME/images/KEY.EXT          a real dataset's images, content-addressed
real/dataset=NAME/version=V/{frames,objects}.parquet, categories.json   one ingested version
real/dataset=NAME/current                 the current version V
predictions/model=M/dataset=D/version=V/predictions.parquet   one ingested version
predictions/model=M/dataset=D/current     the current version V
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pyarrow as pa
import pyarrow.compute as pc
import yaml

from generators.labels import archive as arc
from vario.batch.plan import Plan, read_manifest
from vario.batch.spec import BatchSpec, SpecError, checked_batch

SPEC_SUFFIXES = (".yaml", ".yml", ".json")
VERSION = re.compile(r"^[0-9a-f]{16}$")  # an ingested version: 16 hex digits of a SHA-256
PREVIEW_NAME = re.compile(r"^[a-z0-9][a-z0-9_~-]{0,79}$")  # a batch or shard name: one file


def checked_version(version: str) -> str:
    """``version`` if it is a version (read from a ``current`` file or a folder name): only
    such a string reaches a path or a query."""
    if not isinstance(version, str) or not VERSION.match(version):
        raise ValueError(f"not a version: {str(version)[:80]!r} (expected 16 hex digits)")
    return version


def read_current(path: Path) -> str | None:
    """The version a ``current`` file names, None when there is none yet."""
    try:
        return checked_version(path.read_text().strip())
    except FileNotFoundError:
        return None


def free_name(path: Path, data: bytes, read: Callable[[Path], bytes | None]) -> Path:
    """``path``, or ``<stem>-2<suffix>``, ``-3`` ...: the first that is free or already holds
    ``data`` (``read`` gives a taken name's content, None if it is free)."""
    candidate, n = path, 1
    while True:
        try:
            held = read(candidate)
        except FileNotFoundError:
            held = None
        if held is None or held == data:
            return candidate
        n += 1
        candidate = path.with_name(f"{path.stem}-{n}{path.suffix}")


@dataclass(frozen=True)
class DataStore:
    root: Path

    @property
    def inbox(self) -> Path:
        return self.root / "inbox"

    def inbox_specs(self) -> list[Path]:
        if not self.inbox.exists():
            return []
        return sorted(p for p in self.inbox.iterdir() if p.suffix in SPEC_SUFFIXES)

    def submit(self, spec_path: Path) -> Path:
        """Drop a spec into the inbox (atomically: the sensor never sees half a file). It
        never replaces another spec: a name already taken gets a number; the same content
        again is the file already there."""
        data = Path(spec_path).read_bytes()
        target = free_name(self.inbox / Path(spec_path).name, data, lambda p: p.read_bytes())
        arc.write_atomic(target, data)
        return target

    def submit_spec(self, spec: dict) -> Path:
        """Drop a spec given as data into the inbox, named after the batch."""
        target = self.inbox / f"{spec['name']}.yaml"
        arc.write_atomic(target, yaml.safe_dump(spec, sort_keys=False).encode())
        return target

    def reject(self, spec_path: Path, messages: list[str]) -> Path:
        """Move a spec to ``rejected/`` with ``<name>.error.txt`` beside it (its errors)."""
        target = self._settled(spec_path, "rejected")
        arc.write_atomic(
            target.with_name(target.name + ".error.txt"), ("\n".join(messages) + "\n").encode()
        )
        os.replace(spec_path, target)
        return target

    def mark_processed(self, spec_path: Path) -> Path:
        """Move a registered spec to ``processed/``."""
        target = self._settled(spec_path, "processed")
        os.replace(spec_path, target)
        return target

    def _settled(self, spec_path: Path, folder: str) -> Path:
        """Where a spec leaving the inbox goes in ``folder``: its own name unless another
        spec took it (then numbered), so a settled spec is never overwritten."""
        target = self.inbox / folder / spec_path.name
        target.parent.mkdir(parents=True, exist_ok=True)
        return free_name(target, spec_path.read_bytes(), lambda p: p.read_bytes())

    def batch_dir(self, batch: str) -> Path:
        return self.root / "batches" / checked_batch(batch)

    def batches(self) -> list[str]:
        folder = self.root / "batches"
        return sorted(p.name for p in folder.iterdir()) if folder.exists() else []

    def recorded(self, spec: BatchSpec) -> bool:
        """Whether this spec's batch is recorded already (False: the name is free); a name
        recorded with a different spec raises ``SpecError``: batches are immutable. A real
        dataset's name is taken too: its rows share the ``batch`` column of every view."""
        if self.real_dir(spec.name).exists():
            raise SpecError([f"name: {spec.name!r} is a real dataset ({self.real_dir(spec.name)})"])
        spec_file = self.spec_path(spec.name)
        if not spec_file.exists():
            return False
        if spec_file.read_text() != spec.model_dump_json(indent=2):
            raise SpecError([f"name: batch {spec.name!r} exists with another spec ({spec_file})"])
        return True

    def save_plan(self, plan: Plan) -> None:
        """Record a planned batch (manifest, then spec: a recorded spec means a whole batch);
        the same spec again is a no-op and another spec under the name is refused."""
        if self.recorded(plan.spec):
            return
        arc.write_atomic(self.manifest_path(plan.spec.name), plan.parquet)
        arc.write_atomic(
            self.spec_path(plan.spec.name), plan.spec.model_dump_json(indent=2).encode()
        )

    def cancel_path(self, batch: str) -> Path:
        return self.batch_dir(batch) / "cancelled"

    def cancel(self, batch: str) -> None:
        """Mark a recorded batch cancelled: its shard runs stop before their next job (the
        jobs rendered are kept). Cancelling it again changes nothing."""
        if not self.cancel_path(batch).exists():
            arc.write_atomic(self.cancel_path(batch), b"cancelled\n")

    def cancelled(self, batch: str) -> bool:
        return self.cancel_path(batch).exists()

    def spec_path(self, batch: str) -> Path:
        return self.batch_dir(batch) / "spec.json"

    def spec(self, batch: str) -> BatchSpec:
        return BatchSpec.model_validate(json.loads(self.spec_path(batch).read_text()))

    def manifest_path(self, batch: str) -> Path:
        return self.batch_dir(batch) / "manifest.parquet"

    def manifest(self, batch: str, *, columns: list[str] | None = None) -> pa.Table:
        return read_manifest(self.manifest_path(batch), columns=columns)

    def shard_keys(self, batch: str) -> list[str]:
        """The batch's shard keys, in order, from its manifest's shard column alone."""
        shard = read_manifest(self.manifest_path(batch), columns=["shard"]).column("shard")
        return sorted(pc.unique(shard).to_pylist())

    def shard_manifest(self, batch: str, shard: str) -> pa.Table:
        """One shard's rows of the batch's manifest, in job order."""
        return read_manifest(self.manifest_path(batch), shard=shard)

    def archive_dir(self, batch: str) -> Path:
        return self.root / "archives" / checked_batch(batch)

    def table_dir(self, table: str, batch: str) -> Path:
        return self.root / "tables" / table / f"batch={checked_batch(batch)}"

    def table_path(self, table: str, batch: str, shard: str) -> Path:
        return self.table_dir(table, batch) / f"{shard}.parquet"

    def table_glob(self, table: str) -> str:
        return str(self.root / "tables" / table / "*" / "*.parquet")

    def preview_path(self, batch: str, name: str) -> Path:
        """A contact sheet of the batch's frames: ``name`` is a shard key or the batch's own
        name. Both come from partition keys, so anything that could leave the folder (a
        separator, a leading dot) is refused."""
        if not isinstance(name, str) or not PREVIEW_NAME.match(name):
            raise ValueError(f"not a preview name: {str(name)[:80]!r} ({PREVIEW_NAME.pattern})")
        return self.root / "previews" / checked_batch(batch) / f"{name}.jpg"

    # Real datasets and model predictions (vario.ingest, docs/real-data.md).

    @property
    def real_root(self) -> Path:
        return self.root / "real"

    def real_dir(self, dataset: str) -> Path:
        """A real dataset's folder: its images and every ingested version."""
        return self.real_root / f"dataset={checked_batch(dataset)}"

    def real_images_dir(self, dataset: str) -> Path:
        return self.real_dir(dataset) / "images"

    def real_version_dir(self, dataset: str, version: str) -> Path:
        return self.real_dir(dataset) / f"version={checked_version(version)}"

    def real_current_path(self, dataset: str) -> Path:
        return self.real_dir(dataset) / "current"

    def real_current(self, dataset: str) -> str | None:
        """The real dataset's current version, None if it has none."""
        return read_current(self.real_current_path(dataset))

    def real_datasets(self) -> list[str]:
        """The real datasets with a current version, by name."""
        if not self.real_root.exists():
            return []
        return sorted(
            p.parent.name.removeprefix("dataset=") for p in self.real_root.glob("dataset=*/current")
        )

    @property
    def predictions_root(self) -> Path:
        return self.root / "predictions"

    def predictions_dir(self, model: str, dataset: str) -> Path:
        """One model's predictions on one dataset (a batch or a real dataset): every version."""
        return (
            self.predictions_root
            / f"model={checked_batch(model)}"
            / f"dataset={checked_batch(dataset)}"
        )

    def predictions_version_dir(self, model: str, dataset: str, version: str) -> Path:
        return self.predictions_dir(model, dataset) / f"version={checked_version(version)}"

    def predictions_current_path(self, model: str, dataset: str) -> Path:
        return self.predictions_dir(model, dataset) / "current"

    def predictions_current(self, model: str, dataset: str) -> str | None:
        return read_current(self.predictions_current_path(model, dataset))
