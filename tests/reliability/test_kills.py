"""``kill -9`` of a shard's process, not of its process group: nothing it started (its
forkserver, pool workers, their render workers) is alive 10 s later, and the shard run again
ends with the tables of an uninterrupted run, byte for byte."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

from conftest import running

from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.run import shard as sh

SPEC = {
    "name": "kill",
    "generator": "tabletop",
    "seed": 9,
    "fixed": {"resolution": 128, "n_frames": 6, "n_objects": 3},
    "sampler": {"kind": "random", "count": 8, "ranges": {"light_azimuth": [0, 360]}},
}
SHARD = """
import json, sys
from pathlib import Path
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.run import shard as sh
manifest = plan(BatchSpec.model_validate(json.loads(sys.argv[2]))).manifest
sh.run_shard("tabletop", manifest, Path(sys.argv[1]), workers=2)
"""


def _descendants(root: int) -> set[int]:
    parents = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            parents[int(stat.parent.name)] = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError):
            continue
    found, frontier = set(), {root}
    while frontier:
        frontier = {p for p, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def test_a_killed_shard_leaves_no_process_and_its_rerun_matches(tmp_path):
    killed, clean = tmp_path / "killed", tmp_path / "clean"
    shard = subprocess.Popen([sys.executable, "-c", SHARD, str(killed), json.dumps(SPEC)])
    deadline = time.monotonic() + 120
    while len(list(killed.glob("*.zip"))) < 2:
        assert shard.poll() is None and time.monotonic() < deadline
        time.sleep(0.05)
    family = _descendants(shard.pid)
    assert len(family) >= 3  # forkserver and two pool workers, at least
    os.kill(shard.pid, signal.SIGKILL)  # the process alone, as an OOM killer or a node would
    shard.wait()
    deadline = time.monotonic() + 10
    while any(map(running, family)) and time.monotonic() < deadline:
        time.sleep(0.1)
    assert [p for p in family if running(p)] == []

    manifest = plan(BatchSpec.model_validate(SPEC)).manifest
    tables = {}
    for out in (killed, clean):
        outcomes = sh.run_shard("tabletop", manifest, out, workers=2)
        tables[out] = sh.shard_tables("tabletop", manifest, out, outcomes)
    for name in ("frames", "objects", "events"):
        assert tables[killed][name].equals(tables[clean][name]), name
    keep = [c for c in tables[clean]["jobs"].column_names if not c.endswith("_seconds")]
    assert tables[killed]["jobs"].select(keep).equals(tables[clean]["jobs"].select(keep))
