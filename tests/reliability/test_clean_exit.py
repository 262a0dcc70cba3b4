"""Jobs end cleanly. A process that read a job's label tables exits cleanly: Arrow's reads
on its own threads used to leave work that aborted the process at exit (exit 134, "terminate
called without an active exception"), which turned finished Cycles jobs into failures
(with the threaded read about 1 process in 10, through a Python file object about 1 in 200
on a loaded machine: so the read must start no thread at all). And a render worker that
dies once its archive is written leaves a done job, not a failed one beside a kept
archive."""

from __future__ import annotations

import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor

from faulty_generator import FaultyGenerator

from generators.labels import archive as arc

READ = """
import os, sys
from generators.labels import archive
threads = len(os.listdir("/proc/self/task"))
archive.read_tables(sys.argv[1])
print(len(os.listdir("/proc/self/task")) - threads)
"""


def test_reading_an_archives_tables_never_aborts_the_process_at_exit(tabletop_job):
    """The read starts no Arrow thread (whose last work, at exit, aborted about 1 process in
    200 on a loaded machine), and the processes end with status 0."""

    def read(_: int) -> tuple[int, str]:
        command = [sys.executable, "-c", READ, str(tabletop_job.archive)]
        done = subprocess.run(command, capture_output=True, text=True)
        return done.returncode, done.stdout.strip()

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(read, range(20)))
    assert results == [(0, "0")] * 20  # no thread started by the read


def test_a_worker_that_dies_after_writing_its_archive_leaves_a_done_job(tmp_path):
    gen = FaultyGenerator()
    tiny = {"resolution": 64, "n_frames": 2, "samples": 8}
    params = gen.Params(renderer="cycles", fault="abort", **tiny)
    result = gen.run(params, 3, tmp_path)
    assert result.status == "ok" and result.error is None, result.error
    assert arc.is_complete(result.archive)
    assert [p.name for p in tmp_path.iterdir()] == [result.archive.name]
    assert result.frames.num_rows == 2
