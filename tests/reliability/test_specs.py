"""Hostile and careless batch specs: each is refused before any work, quickly, in bounded
memory, with a short message naming what is wrong, and the CLI exits 2."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import tracemalloc

import pytest

from vario.batch.spec import SpecError, load_spec
from vario.store.layout import DataStore


def _billion_laughs() -> str:
    lines = ['a: &a ["lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol", "lol"]']
    for i in range(1, 9):
        prev, cur = chr(ord("a") + i - 1), chr(ord("a") + i)
        lines.append(f"{cur}: &{cur} [" + ", ".join([f"*{prev}"] * 9) + "]")
    return "\n".join([*lines, "name: bomb", "generator: tabletop", "jobs: *i", ""])


HEAD = "name: spec\ngenerator: tabletop\n"
SPECS = {
    "billion laughs": (_billion_laughs().encode(), "aliases (*name) are not allowed"),
    "50 MB": ((HEAD + "jobs:\n" + "  - {n_objects: 2}\n" * 2_800_000).encode(), "larger than"),
    "ten million jobs": (
        (HEAD + "sampler: {kind: random, count: 10000000, ranges: {fov: [30, 60]}}\n").encode(),
        "10,000,000 jobs, more than VARIO_MAX_JOBS allows (1,000,000)",
    ),
    "a billion-point grid": (
        (
            HEAD + "sampler: {kind: grid, levels: 1000, "
            "ranges: {fov: [30, 60], light_azimuth: [0, 360], camera_azimuth: [0, 360]}}\n"
        ).encode(),
        "1,000,000,000 jobs, more than VARIO_MAX_JOBS",
    ),
    "no jobs": ((HEAD + "jobs: []\n").encode(), "jobs: List should have at least 1 item"),
    "not UTF-8": (b"name: caf\xe9\ngenerator: tabletop\njobs: [{}]\n", "not UTF-8 text"),
}


@pytest.mark.parametrize("case", list(SPECS))
def test_a_hostile_spec_is_refused_fast_in_bounded_memory(tmp_path, case):
    content, message = SPECS[case]
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    tracemalloc.start()
    started = time.perf_counter()
    with pytest.raises(SpecError) as refused:
        load_spec(path)
    seconds = time.perf_counter() - started
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert seconds < 1.0 and peak < 50 * 2**20, (seconds, peak)
    assert any(message in m for m in refused.value.messages), refused.value.messages
    assert sum(len(m) for m in refused.value.messages) < 1000  # short, never the document


@pytest.mark.parametrize("case", ["billion laughs", "ten million jobs"])
def test_the_cli_exits_2_and_plans_nothing(tmp_path, case):
    content, message = SPECS[case]
    path = tmp_path / "spec.yaml"
    path.write_bytes(content)
    data = tmp_path / "data"
    result = subprocess.run(
        [sys.executable, "-m", "dagster_project.cli", "batch", "submit", str(path)],
        env={**os.environ, "VARIO_DATA_DIR": str(data)},
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2 and message in result.stderr
    assert not data.exists() or not any(data.rglob("*.yaml"))


def test_the_inbox_never_overwrites_a_spec(tmp_path):
    store = DataStore(tmp_path / "data")
    first, second = tmp_path / "a" / "spec.yaml", tmp_path / "b" / "spec.yaml"
    for path, seed in ((first, 1), (second, 2)):
        path.parent.mkdir()
        path.write_text(f"{HEAD}seed: {seed}\njobs: [{{}}]\n")
    assert store.submit(first).name == "spec.yaml"
    assert store.submit(second).name == "spec-2.yaml"  # same file name, another spec
    assert store.submit(first).name == "spec.yaml"  # the same spec again: nothing new
    assert sorted(p.read_text() for p in store.inbox_specs()) == sorted(
        p.read_text() for p in (first, second)
    )
