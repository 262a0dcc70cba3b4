"""Where a Vario data folder keeps things. One layout, used by the CLI, Dagster and benchmarks:

inbox/                       specs to submit (*.yaml, *.yml, *.json)
inbox/rejected/NAME          an invalid spec, with NAME.error.txt beside it
inbox/processed/NAME         a spec that was planned
batches/BATCH/spec.json      the accepted spec
batches/BATCH/manifest.parquet   one row per job (job id, shard, seed, parameters)
archives/BATCH/JOB_ID.zip    job archives (and JOB_ID.failed.json for failed jobs)
tables/TABLE/batch=BATCH/SHARD.parquet   label tables, hive-partitioned by batch
"""

from __future__ import annotations

import json
import os
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
        recorded with a different spec raises ``SpecError``: batches are immutable."""
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
