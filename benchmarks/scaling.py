"""Shard runs through Dagster's run queue on PostgreSQL: jobs per second against the shard
runs allowed at once, the cost of launching a run, and partitions registered per second;
the measured inputs of the scaling model in docs/scaling.md.

For each limit (``VARIO_MAX_CPU_SHARD_RUNS``: 1, 2, 4), and once more with the same jobs in
2 bigger shards at limit 2, a fresh database holds a fresh
instance; the real Dagster daemon (as ``vario serve`` starts it) picks the spec up from the
inbox, its sensor registers the partitions and requests one run per shard, and its
QueuedRunCoordinator launches them, each a process of its own, at most the limit at once.
Each shard run has one render worker (``VARIO_WORKERS=1``), so the limit is the
parallelism. Timed from the first shard run's creation to the last one's end, read back
from the instance's run records. The baseline, measured in the same run: the same jobs
rendered one after the other in this process, with no Dagster at all.

Launch cost is read from the limit-1 runs, which run one after the other: the gap from one
run's end to the next one's start (dequeue, process start, code loading), and each run's
own time beyond its jobs' (the step, its checks, tables, publishing). Partitions per second:
``add_dynamic_partitions`` in chunks of 500 (as the sensor adds a batch's shards), on
PostgreSQL and on SQLite.

    uv run python benchmarks/scaling.py [--shards 8] [--shard-size 4] [--limits 1 2 4]

Needs a PostgreSQL server: the machine's on loopback, or one started (and installed, as
root) the way the tests start theirs (``tests/pg_server.py``).
"""

from __future__ import annotations

import argparse
import contextlib
import os
import resource
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import dagster as dg
import psycopg2
import yaml

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
import pg_server  # noqa: E402  (the tests' server helper: one way to get a server)

from dagster_project.instance import dagster_home  # noqa: E402
from generators.contract import registry  # noqa: E402
from vario.batch.plan import plan  # noqa: E402
from vario.batch.spec import BatchSpec  # noqa: E402
from vario.store.layout import DataStore  # noqa: E402

WARN_ONLY = {n: {"severity": "WARN"} for n in ("coverage", "bias", "balance", "novelty")}


def spec(shards: int, shard_size: int) -> dict:
    return {
        "name": "scale",
        "generator": "tabletop",
        "seed": 3,
        "shard_size": shard_size,
        "fixed": {"resolution": 64, "n_frames": 1, "n_objects": 3, "n_distractors": 0},
        "sampler": {"kind": "sobol", "count": shards * shard_size, "ranges": {"fov": [30, 60]}},
    }


def bare_jobs_per_second(batch: dict, out: Path) -> float:
    """The same jobs, one after the other, in this process."""
    gen = registry.get("tabletop")
    rows = plan(BatchSpec.model_validate(batch)).manifest.to_pylist()
    started = time.perf_counter()
    for row in rows:
        gen.run(gen.Params.model_validate_json(row["params_json"]), row["seed"], out)
    return len(rows) / (time.perf_counter() - started)


@contextlib.contextmanager
def environment(values: dict[str, str]):
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


def through_the_queue(batch: dict, url: str, limit: int, root: Path) -> dict:
    """Run the batch's shards through the daemon's queue; the shard runs' records."""
    templates = root / "templates"
    templates.mkdir(parents=True)
    (templates / "scale.tests.yaml").write_text(yaml.safe_dump(WARN_ONLY))
    env = {
        "DAGSTER_HOME": str(root / "home"),
        "VARIO_DATA_DIR": str(root / "data"),
        "VARIO_TEMPLATES_DIR": str(templates),
        "VARIO_DAGSTER_POSTGRES_URL": url,
        "VARIO_MAX_CPU_SHARD_RUNS": str(limit),
        "VARIO_WORKERS": "1",
        "VARIO_SENSOR_INTERVAL": "1",
    }
    shards = batch["sampler"]["count"] // batch["shard_size"]
    with environment(env):
        dagster_home()
        log = (root / "daemon.log").open("wb")
        daemon = subprocess.Popen(
            [sys.executable, "-m", "dagster._daemon", "run", "-m", "dagster_project.definitions"],
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        try:
            store = DataStore(root / "data")
            store.inbox.mkdir(parents=True, exist_ok=True)
            (store.inbox / "scale.yaml").write_text(yaml.safe_dump(batch))
            with dg.DagsterInstance.get() as instance:
                records = _wait_for_shards(instance, shards, timeout=1800)
                events = _events_per_run(url, [r.dagster_run.run_id for r in records])
        finally:
            os.killpg(daemon.pid, signal.SIGTERM)
            try:
                daemon.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(daemon.pid, signal.SIGKILL)
                daemon.wait()
            log.close()
    failed = [r for r in records if r.dagster_run.status != dg.DagsterRunStatus.SUCCESS]
    if failed:
        raise SystemExit(f"{len(failed)} shard runs failed; see {root / 'daemon.log'}")
    return {"records": records, "events": events}


def _wait_for_shards(instance: dg.DagsterInstance, shards: int, timeout: float) -> list:
    deadline = time.monotonic() + timeout
    ended = (dg.DagsterRunStatus.SUCCESS, dg.DagsterRunStatus.FAILURE)
    while time.monotonic() < deadline:
        records = instance.get_run_records(dg.RunsFilter(job_name="render_shard_job"))
        if len(records) == shards and all(r.dagster_run.status in ended for r in records):
            return records
        time.sleep(0.5)
    raise SystemExit(f"the shard runs did not finish in {timeout:.0f} s")


def _events_per_run(url: str, run_ids: list[str]) -> float:
    """Event log rows each shard run wrote to PostgreSQL, on average."""
    connection = psycopg2.connect(url.replace("+psycopg2", ""))
    with contextlib.closing(connection), connection.cursor() as cursor:
        cursor.execute("SELECT count(*) FROM event_logs WHERE run_id = ANY(%s)", (run_ids,))
        return cursor.fetchone()[0] / len(run_ids)


def partitions_per_second(instance: dg.DagsterInstance, count: int = 5000) -> float:
    keys = [f"bench~{i:05d}" for i in range(count)]
    started = time.perf_counter()
    for i in range(0, count, 500):
        instance.add_dynamic_partitions("bench_shards", keys[i : i + 500])
    return count / (time.perf_counter() - started)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--shards", type=int, default=8)
    parser.add_argument("--shard-size", type=int, default=4)
    parser.add_argument("--limits", type=int, nargs="+", default=[1, 2, 4])
    parser.add_argument("--big-shards", type=int, default=2, help="the same jobs in so many")
    args = parser.parse_args()
    batch = spec(args.shards, args.shard_size)
    jobs = args.shards * args.shard_size
    print(f"{jobs} tabletop jobs (64 px, 1 frame) in {args.shards} shards of {args.shard_size};")
    print(f"{os.cpu_count()} CPUs; one render worker per shard run\n")
    with tempfile.TemporaryDirectory() as tmp, pg_server.server() as server:
        tmp = Path(tmp)
        bare = bare_jobs_per_second(batch, tmp / "bare")
        print(f"baseline: the same jobs one after the other, no Dagster: {bare:.2f} jobs/s\n")
        print(
            f"{'runs at once':>12}  {'jobs/s':>7}  {'x baseline':>10}  {'wall s':>7}  "
            f"{'run s (median)':>14}"
        )
        launch_gaps, beyond_jobs, events = [], [], []
        for limit in args.limits:
            with pg_server.database(server) as url:
                result = through_the_queue(batch, url, limit, tmp / f"limit{limit}")
            records = sorted(result["records"], key=lambda r: r.start_time)
            first = min(r.create_timestamp.timestamp() for r in records)
            wall = max(r.end_time for r in records) - first
            durations = [r.end_time - r.start_time for r in records]
            print(
                f"{limit:>12}  {jobs / wall:>7.2f}  {jobs / wall / bare:>10.2f}  "
                f"{wall:>7.1f}  {statistics.median(durations):>14.2f}"
            )
            events.append(result["events"])
            if limit == 1:
                launch_gaps = [
                    b.start_time - a.end_time for a, b in zip(records, records[1:], strict=False)
                ]
                beyond_jobs = [d - args.shard_size / bare for d in durations]
        # the remedy for launch cost, measured: the same jobs in fewer, bigger shards
        big = spec(args.big_shards, jobs // args.big_shards)
        with pg_server.database(server) as url:
            records = through_the_queue(big, url, 2, tmp / "big")["records"]
        first = min(r.create_timestamp.timestamp() for r in records)
        wall = max(r.end_time for r in records) - first
        label = f"2 ({args.big_shards} shards of {jobs // args.big_shards})"
        print(f"{label:>12}  {jobs / wall:>7.2f}  {jobs / wall / bare:>10.2f}  {wall:>7.1f}")
        if launch_gaps:
            print(
                f"\nrun launch (limit 1: one run's end to the next one's start): median "
                f"{statistics.median(launch_gaps):.2f} s, max {max(launch_gaps):.2f} s"
            )
            print(
                f"a shard run's own time beyond its jobs': median "
                f"{statistics.median(beyond_jobs):.2f} s"
            )
        print(f"event log rows per shard run on PostgreSQL: {statistics.mean(events):.0f}")
        with pg_server.database(server) as url, environment({"VARIO_DAGSTER_POSTGRES_URL": url}):
            home = tmp / "partitions-pg"
            with environment({"DAGSTER_HOME": str(home)}):
                dagster_home()
                with dg.DagsterInstance.get() as instance:
                    on_postgres = partitions_per_second(instance)
        (tmp / "partitions-sqlite").mkdir()
        with dg.instance_for_test(temp_dir=str(tmp / "partitions-sqlite")) as instance:
            on_sqlite = partitions_per_second(instance)
        print(
            f"partitions registered per second: PostgreSQL {on_postgres:,.0f}, "
            f"SQLite {on_sqlite:,.0f} (chunks of 500)"
        )
    self_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    child_mib = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(f"peak memory: this process {self_mib:.0f} MiB, largest child {child_mib:.0f} MiB")


if __name__ == "__main__":
    main()
