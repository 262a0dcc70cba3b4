"""The ``vario`` command line: inspect generators, run jobs, plan and submit batches, query
the dataset, open the UI.

Usage errors (an unknown generator, an invalid parameter or spec) exit with code 2 before
anything is written.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from pathlib import Path

import click
from tqdm import tqdm

from dagster_project.resources import resolved_storage
from generators.contract import registry
from generators.params import ParameterError, describe, parse_assignments, validate
from generators.settings import settings
from vario.batch.plan import plan
from vario.batch.spec import SpecError, load_spec
from vario.store.layout import DataStore


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _generator(name: str):
    try:
        return registry.get(name)
    except KeyError as exc:
        _fail(exc.args[0])


def _plan(spec_path: Path):
    try:
        return plan(load_spec(spec_path))
    except SpecError as exc:
        _fail(f"invalid batch spec {spec_path}:\n  " + "\n  ".join(exc.messages))


def _table(rows: list[tuple], header: tuple, max_width: int = 40) -> str:
    """Aligned columns; a cell longer than ``max_width`` is printed whole and overflows."""
    widths = [
        min(max(len(str(r[i])) for r in [header, *rows]), max_width) for i in range(len(header))
    ]
    return "\n".join(
        "  ".join(str(c).ljust(w) for c, w in zip(r, widths, strict=True)).rstrip()
        for r in [header, *rows]
    )


@click.group()
def main() -> None:
    """Vario: synthetic, perfectly labelled data for computer vision."""


@main.group()
def generators() -> None:
    """Inspect the installed generators."""


@generators.command("list")
def generators_list() -> None:
    """Name, version and description of every installed generator."""
    for name, cls in registry.available().items():
        click.echo(f"{name:<16} {cls.version:<8} {cls.description}")


@generators.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the parameters' JSON Schema.")
def generators_show(name: str, as_json: bool) -> None:
    """Every parameter of a generator: type, default, allowed values, description."""
    gen = _generator(name)
    if as_json:
        click.echo(json.dumps(gen.Params.model_json_schema(), indent=2))
        return
    rows = [
        (d.name, d.type, json.dumps(d.default), d.allowed, d.description)
        for d in describe(gen.Params)
    ]
    click.echo(f"{gen.name} {gen.version}: {gen.description}\n")
    click.echo(_table(rows, ("parameter", "type", "default", "allowed", "description")))


def _run(name, assignments, seed, out, batch_id, preview=False, time_limit=None):
    gen = _generator(name)
    if preview:
        assignments = [*assignments, "renderer=tiny"]
    try:
        params = validate(gen.Params, parse_assignments(gen.Params, assignments))
    except ParameterError as exc:
        _fail(f"invalid parameters for {name}:\n  " + "\n  ".join(exc.messages))
    # SIGTERM unwinds like Ctrl-C, so the partial archive is removed (SIGKILL leaves only it)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with tqdm(desc=f"{name} seed={seed}", unit="frame") as bar:

        def progress(done: int, total: int) -> None:
            bar.total = total
            bar.update(done - bar.n)

        return gen.run(
            params, seed, out, batch_id=batch_id, on_frame=progress, time_limit=time_limit
        )


@main.command("run")
@click.argument("generator")
@click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE", help="A parameter.")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Folder [default: DATA/jobs].")
@click.option("--batch-id", default="adhoc", show_default=True)
@click.option("--preview", is_flag=True, help="The same job with the fast renderer (tiny).")
@click.option("--time-limit", type=float, help="Seconds before an isolated job is stopped.")
def run(generator, assignments, seed, out, batch_id, preview, time_limit) -> None:
    """Run one job of GENERATOR and print where its archive is (exit 1 if it failed)."""
    out = out or settings().data_dir / "jobs"
    result = _run(generator, list(assignments), seed, out, batch_id, preview, time_limit)
    if result.archive is None:
        click.echo(f"error: job {result.job_id} failed: {result.error}", err=True)
        sys.exit(1)
    click.echo(str(result.archive))


@main.group()
def batch() -> None:
    """Plan, submit and follow batches (see docs/batches.md for the spec)."""


@batch.command("plan")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--show", default=5, show_default=True, help="Jobs to print.")
def batch_plan(spec: Path, show: int) -> None:
    """Validate SPEC and print its jobs and shards; runs nothing, writes nothing."""
    batch_plan = _plan(spec)
    manifest = batch_plan.manifest
    s = batch_plan.spec
    click.echo(
        f"batch {s.name}: {manifest.num_rows} jobs of {s.generator} ({s.renderer}), "
        f"{len(batch_plan.shards)} shards of up to {s.shard_size}"
    )
    varying = list(s.sampler.ranges) if s.sampler else sorted({k for j in s.jobs for k in j})
    rows = []
    for r in manifest.slice(0, show).to_pylist():
        params = json.loads(r["params_json"])
        rows.append(
            (
                r["job_index"],
                r["job_id"],
                r["shard"],
                r["seed"],
                *(_short(params.get(k)) for k in varying),
            )
        )
    click.echo(_table(rows, ("job", "job_id", "shard", "seed", *varying)))


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


@batch.command("submit")
@click.argument("spec", type=click.Path(exists=True, dir_okay=False, path_type=Path))
def batch_submit(spec: Path) -> None:
    """Validate SPEC and drop it into the inbox, where the Dagster sensor picks it up."""
    batch_plan = _plan(spec)
    target = resolved_storage().submit(spec)
    click.echo(
        f"submitted {batch_plan.spec.name} ({batch_plan.manifest.num_rows} jobs, "
        f"{len(batch_plan.shards)} shards): {target}"
    )


@batch.command("status")
@click.argument("name")
def batch_status(name: str) -> None:
    """Jobs done, failed and pending, per shard and in all."""
    from vario.run import shard as sh

    store = DataStore(settings().data_dir)
    if name not in store.batches():
        _fail(f"no batch {name!r} in {store.root}; batches: {', '.join(store.batches()) or '-'}")
    manifest, out = store.manifest(name), store.archive_dir(name)
    counts: dict[str, dict[str, int]] = {}
    for r in manifest.to_pylist():
        if sh.is_complete(sh.archive_path(out, r["job_id"])):
            state = "done"
        elif sh.failure_path(out, r["job_id"]).exists():
            state = "failed"
        else:
            state = "pending"
        counts.setdefault(r["shard"], {"done": 0, "failed": 0, "pending": 0})[state] += 1
    rows = [(s, c["done"], c["failed"], c["pending"]) for s, c in sorted(counts.items())]
    total = tuple(sum(r[i] for r in rows) for i in (1, 2, 3))
    click.echo(_table([*rows, ("all", *total)], ("shard", "done", "failed", "pending")))


@main.group()
def dataset() -> None:
    """Test a batch's data like code."""


def _tests_option(command):
    return click.option(
        "--tests",
        "tests_file",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        help="Thresholds [default: batch_templates/<template>.tests.yaml].",
    )(command)


def _batch_and_tests(batch: str, tests_file: Path | None):
    """The data folder and the batch's dataset tests (exit 2 if either is wrong)."""
    from dagster_project.resources import dataset_tests
    from vario.quality import checks as quality

    store = DataStore(settings().data_dir)
    if batch not in store.batches():
        _fail(f"no batch {batch!r} in {store.root}; batches: {', '.join(store.batches()) or '-'}")
    try:
        tests = (
            quality.load_tests(tests_file)
            if tests_file
            else dataset_tests().for_spec(store.spec(batch))
        )
    except quality.TestsFileError as exc:
        _fail("invalid dataset tests:\n  " + "\n  ".join(exc.messages))
    return store, tests


@dataset.command("test")
@click.argument("batch")
@_tests_option
def dataset_test(batch: str, tests_file: Path | None) -> None:
    """Run the dataset tests of BATCH; exit 1 when a check of ERROR severity fails."""
    from vario.quality import checks as quality

    store, tests = _batch_and_tests(batch, tests_file)
    results = quality.run_checks(store, batch, tests)
    rows = [(r.name, "pass" if r.passed else "FAIL", r.severity, r.message[:120]) for r in results]
    click.echo(_table(rows, ("check", "result", "severity", "detail")))
    if any(r.blocking for r in results):
        sys.exit(1)


@dataset.command("report")
@click.argument("batch")
@_tests_option
def dataset_report(batch: str, tests_file: Path | None) -> None:
    """Write BATCH's HTML dataset report (tests and plots) and print its path."""
    from vario.quality.report import write_report

    store, tests = _batch_and_tests(batch, tests_file)
    path, _, _ = write_report(store, batch, tests)
    click.echo(str(path))


@main.command("query")
@click.argument("sql")
@click.option("--max-rows", default=40, show_default=True)
def query(sql: str, max_rows: int) -> None:
    """Run a read-only SQL query over the dataset's views: jobs, frames, objects, events."""
    import duckdb

    from vario.store import views as dataset

    statements = duckdb.extract_statements(sql)
    allowed = {duckdb.StatementType.SELECT, duckdb.StatementType.EXPLAIN}
    if len(statements) != 1 or statements[0].type not in allowed:
        _fail("vario query runs one read-only statement (SELECT, WITH ... SELECT, EXPLAIN)")
    storage = resolved_storage()
    con = dataset.connect(storage.store, storage.arrow_filesystem())
    try:
        relation = con.sql(sql)
    except duckdb.Error as exc:
        _fail(str(exc))
    relation.show(max_rows=max_rows)


@main.command("ui")
@click.option("--port", default=3000, show_default=True)
def ui(port: int) -> None:
    """Open the Dagster UI (and daemon) on the project's instance: ``dagster dev``."""
    from dagster_project.instance import dagster_home

    dagster_home()
    os.execvp(
        sys.executable,
        [
            sys.executable,
            *("-m", "dagster", "dev", "-m", "dagster_project.definitions", "-p", str(port)),
        ],
    )


@main.command("demo")
def demo() -> None:
    """Run a small batch through Dagster (real materialisations, kept in the project's
    instance) and slice its labels with DuckDB."""
    from dagster_project.demo import run_demo

    run_demo()


if __name__ == "__main__":
    main()
