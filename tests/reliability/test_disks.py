"""Full and read-only disks: a job that cannot write fails with the system's reason in one
line (exit 1), and leaves no file behind, partial or whole. The disks are real: small tmpfs
mounts (the tests run as root, as CI does)."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest


@pytest.fixture
def mount(tmp_path):
    """A tmpfs of ``size`` at a fresh folder, ``ro`` for a read-only one; unmounted after."""
    mounted: list[Path] = []

    def make(size: str, *, read_only: bool = False) -> Path:
        target = tmp_path / f"disk{len(mounted)}"
        target.mkdir()
        options = f"size={size}" + (",ro" if read_only else "")
        done = subprocess.run(["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(target)])
        if done.returncode:
            pytest.fail("mounting a tmpfs needs root (the test set-up runs as root)")
        mounted.append(target)
        return target

    yield make
    for target in mounted:
        subprocess.run(["umount", str(target)])


def _run_job(out: Path) -> subprocess.CompletedProcess:
    args = ["--set", "resolution=256", "--set", "n_frames=4", "--out", str(out)]
    return subprocess.run(
        [sys.executable, "-m", "dagster_project.cli", "run", "tabletop", *args],
        env={**os.environ, "COLUMNS": "300"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_a_full_disk_fails_the_job_and_leaves_nothing(mount):
    disk = mount("256k")  # less than the archive of four 256 px frames needs
    result = _run_job(disk)
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "No space left on device" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
    assert list(disk.iterdir()) == []


def test_a_read_only_data_folder_fails_the_job_in_one_line(mount):
    disk = mount("1m", read_only=True)
    result = _run_job(disk / "jobs")
    assert result.returncode == 1
    errors = [line for line in result.stderr.splitlines() if line.startswith("error:")]
    assert len(errors) == 1 and "Read-only file system" in errors[0], result.stderr
    assert "Traceback" not in result.stderr
