"""The ``vario`` command line: inspect generators, run jobs, plan, submit and run batches, test
and query the dataset, open the UI.

Usage errors (an unknown generator, an invalid parameter or spec) exit with code 2 before
anything is written. Heavy modules (Dagster, the renderers, DuckDB) are imported inside the
commands that need them, so ``vario --help`` and ``vario generators list`` answer at once.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import signal
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Literal

import click

from dagster_project import wheel_tags

SPEC = click.Path(exists=True, dir_okay=False, path_type=Path)


def _generator(name: str):
    from dagster_project.console import fail
    from generators.contract import registry

    try:
        return registry.get(name)
    except KeyError as exc:
        fail(exc.args[0])


def _plan(spec_path: Path):
    from dagster_project.console import fail
    from vario.batch.plan import plan
    from vario.batch.spec import SpecError, load_spec

    try:
        return plan(load_spec(spec_path))
    except SpecError as exc:
        fail(f"invalid batch spec {spec_path}:\n  " + "\n  ".join(exc.messages))


def _store():
    from generators.settings import settings
    from vario.store.layout import DataStore

    return DataStore(settings().data_dir)


def _s3_storage():
    """The configured storage when the data lives on S3 (``VARIO_S3_BUCKET``), else None:
    without a bucket the data folder is all there is, and Dagster is not imported."""
    from generators.settings import settings

    if not settings().s3_bucket:
        return None
    from dagster_project.resources import resolved_storage

    return resolved_storage()


def _existing_batch(name: str, fetch: Literal["manifest", "tables", "archives"] = "manifest"):
    """The data folder, holding batch ``name``, or exit 2 naming the batches there. With the
    data on S3 the working copy may be empty, so the batch is fetched first, each file only
    if missing here: its spec and manifest; with ``tables`` its label tables too; with
    ``archives`` also its archives and failure records (which the dataset tests open)."""
    from dagster_project.console import fail
    from vario.batch.spec import BATCH_NAME

    store, storage = _store(), _s3_storage()
    if storage and BATCH_NAME.match(name):
        if fetch == "manifest":
            storage.fetch(store.spec_path(name), store.manifest_path(name))
        else:
            storage.fetch_batch(name, archives=fetch == "archives")
    if name not in store.batches():
        where = f"s3://{storage.s3_bucket}/{storage.s3_prefix}" if storage else store.root
        fail(f"no batch {name!r} in {where}; batches: {', '.join(store.batches()) or '-'}")
    return store


@click.group()
def main() -> None:
    """Vario: synthetic, perfectly labelled data for computer vision."""
    wheel_tags.repair()


@main.group()
def generators() -> None:
    """Inspect the installed generators."""


@generators.command("list")
def generators_list() -> None:
    """Name, version and description of every installed generator."""
    from dagster_project.console import table
    from generators.contract import registry

    rows = [(n, c.version, c.description) for n, c in registry.available().items()]
    table(rows, ("generator", "version", "description"))


ROLE_ORDER = {"semantic": 0, "nuisance": 1, "setting": 2}


@generators.command("show")
@click.argument("name")
@click.option("--json", "as_json", is_flag=True, help="Print the parameters' JSON Schema.")
def generators_show(name: str, as_json: bool) -> None:
    """Every parameter of a generator: type, default, allowed values, description."""
    from dagster_project.console import out, table
    from generators.params import describe

    gen = _generator(name)
    if as_json:
        click.echo(json.dumps(gen.Params.model_json_schema(), indent=2))
        return
    # what changes the task's answer first, then what must not (randomizers among it), then
    # the render and clip settings: a generator with many randomizers stays readable
    roles = dict.fromkeys(gen.domain.nuisance, "nuisance") | dict.fromkeys(
        gen.domain.semantic, "semantic"
    )
    docs = sorted(describe(gen.Params), key=lambda d: ROLE_ORDER[roles.get(d.name, "setting")])
    rows = [
        (d.name, roles.get(d.name, "setting"), d.type, json.dumps(d.default), d.allowed)
        + (d.description,)
        for d in docs
    ]
    out.print(f"{gen.name} {gen.version}: {gen.description}", markup=False)
    table(rows, ("parameter", "role", "type", "default", "allowed", "description"))
    _print_catalog()


def _print_catalog() -> None:
    """The catalog this process resolves from the settings, as job ids and job.json name it:
    the same hash here, in a batch's shard workers and in Dagster means the same assets."""
    from dagster_project.console import out
    from generators.scene.catalog import default_catalog, user_catalog_dir

    catalog = default_catalog()
    out.print(
        f"catalog {catalog.content_hash}: {len(catalog)} assets, user meshes from "
        f"{user_catalog_dir()}",
        markup=False,
    )


def _finite(param: click.Parameter, value: float | None) -> float | None:
    """``FloatRange`` lets ``nan`` through: no comparison with it is true."""
    if value is not None and not math.isfinite(value):
        raise click.BadParameter(f"{value} is not a finite number", param=param)
    return value


@main.command("run")
@click.argument("generator")
@click.option("--set", "assignments", multiple=True, metavar="NAME=VALUE", help="A parameter.")
@click.option("--seed", type=click.IntRange(0, 2**63 - 1), default=0, show_default=True)
@click.option("--out", type=click.Path(path_type=Path), help="Folder [default: DATA/jobs].")
@click.option("--batch-id", default="adhoc", show_default=True)
@click.option("--preview", is_flag=True, help="The same job with the fast renderer (tiny).")
@click.option(
    "--time-limit",
    type=click.FloatRange(min=0, min_open=True, max=1e9),
    callback=lambda ctx, param, value: _finite(param, value),
    help="Seconds before an isolated (Cycles) job is stopped [default: VARIO_JOB_TIME_LIMIT].",
)
def run(generator, assignments, seed, out, batch_id, preview, time_limit) -> None:
    """Run one job of GENERATOR and print where its archive is (exit 1 if it failed)."""
    from dagster_project.console import err, fail, progress
    from generators.job import job_id
    from generators.params import ParameterError, parse_assignments, validate
    from generators.settings import settings

    gen = _generator(generator)
    assignments = [*assignments, "renderer=tiny"] if preview else list(assignments)
    try:
        params = validate(gen.Params, parse_assignments(gen.Params, assignments), strict=True)
    except ParameterError as exc:
        fail(f"invalid parameters for {generator}:\n  " + "\n  ".join(exc.messages))
    # SIGTERM unwinds like Ctrl-C, so the partial archive is removed (SIGKILL leaves only it)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    with progress() as bar:
        task = bar.add_task(f"{generator} seed={seed} frames", total=None, note="")
        try:
            result = gen.run(
                params,
                seed,
                out or settings().data_dir / "jobs",
                batch_id=batch_id,
                on_frame=lambda done, total: bar.update(task, completed=done, total=total),
                time_limit=time_limit,
            )
        except Exception as exc:  # a job that raises in this process: failed, like any other
            error = f"{type(exc).__name__}: {exc}"
        else:
            error = result.error if result.archive is None else None
    if error is not None:
        err.print(f"error: job {job_id(gen, params, seed)} failed: {error}", markup=False)
        _leave(1)
    click.echo(str(result.archive))
    _leave(0)


def _leave(code: int) -> None:
    """End a process that ran a job without native teardown: the archive is synced and
    reported, and a library's exit handler (Arrow's threads, Blender's) can no longer turn
    a finished job into a crash (exit 134)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(code)


@main.group()
def batch() -> None:
    """Plan, submit, run and follow batches (see docs/batches.md for the spec)."""


@batch.command("plan")
@click.argument("spec", type=SPEC)
@click.option("--show", default=5, show_default=True, help="Jobs to print.")
def batch_plan(spec: Path, show: int) -> None:
    """Validate SPEC and print its jobs and shards; runs nothing, writes nothing."""
    from dagster_project.console import out, table

    planned = _plan(spec)
    s = planned.spec
    out.print(
        f"batch {s.name}: {planned.job_count} jobs of {s.generator} ({s.renderer}), "
        f"{len(planned.shards)} shards of up to {s.shard_size}",
        markup=False,
    )
    _print_catalog()  # the one the job ids were made with
    varying = list(s.sampler.ranges) if s.sampler else sorted({k for j in s.jobs for k in j})
    rows = []
    for r in planned.head(show).to_pylist():
        params = json.loads(r["params_json"])
        values = (_short(params.get(k)) for k in varying)
        rows.append((r["job_index"], r["job_id"], r["shard"], r["seed"], *values))
    table(rows, ("job", "job_id", "shard", "seed", *varying))


def _short(value) -> str:
    return f"{value:.4g}" if isinstance(value, float) else json.dumps(value)


def _refuse_conflict(planned) -> None:
    """A batch name already taken by another spec is an error before anything is submitted."""
    from dagster_project.console import fail
    from vario.batch.spec import SpecError

    try:
        _store().recorded(planned.spec)
    except SpecError as exc:
        fail(f"{exc.messages[0]}; rename the batch")


@batch.command("submit")
@click.argument("spec", type=SPEC)
def batch_submit(spec: Path) -> None:
    """Validate SPEC and drop it into the inbox, where the Dagster sensor picks it up."""
    from dagster_project.resources import resolved_storage

    planned = _plan(spec)
    _refuse_conflict(planned)
    target = resolved_storage().submit(spec)
    click.echo(
        f"submitted {planned.spec.name} ({planned.job_count} jobs, "
        f"{len(planned.shards)} shards): {target}"
    )


@batch.command("run")
@click.argument("spec", type=SPEC)
@click.option("--workers", type=click.IntRange(1, 512), help="Worker processes per shard.")
@click.option("--verbose", is_flag=True, help="Print Dagster's event log too.")
@click.option(
    "--retry-failed", is_flag=True, help="Render again the jobs that failed in an earlier run."
)
def batch_run(spec: Path, workers: int | None, verbose: bool, retry_failed: bool) -> None:
    """Run SPEC to completion without a daemon: shards, dataset, dataset tests, export.

    The runs go through the same sensors and jobs as in deployment and are recorded in the
    project's Dagster instance (the UI lists them). Run again, it does only what is missing:
    jobs that failed keep their recorded failure unless --retry-failed. Exit 0 when done and
    the tests pass, 1 when jobs failed beyond the batch's tolerance or an ERROR test failed,
    2 for an invalid spec.
    """
    planned = _plan(spec)
    _refuse_conflict(planned)
    sys.exit(_run_batch(spec, planned, workers, verbose, retry_failed=retry_failed))


def _run_batch(
    spec: Path, planned, workers: int | None, verbose: bool, *, retry_failed: bool = False
) -> int:
    """Run a planned batch with a progress bar and print its summary; the exit code."""
    from dagster_project.console import progress, quiet_dagster

    if workers:
        os.environ["VARIO_WORKERS"] = str(workers)  # the setting every shard run reads
    log_level = quiet_dagster(verbose)
    from dagster_project.local_run import run_batch

    total = planned.job_count
    with progress() as bar:
        task = bar.add_task(f"batch {planned.spec.name} jobs", total=total, note="")

        def on_progress(done: int, failed: int) -> None:
            bar.update(task, completed=done + failed, note=f"{failed} failed" if failed else "")

        outcome = run_batch(
            spec, planned, on_progress=on_progress, log_level=log_level, retry_failed=retry_failed
        )
    _print_outcome(outcome)
    return 1 if outcome.failed_runs or outcome.blocking_failures or not outcome.runs else 0


def _print_outcome(outcome) -> None:
    from dagster_project.console import out

    ran = [r for r in outcome.runs if not r.skipped]
    out.print(
        f"{len(ran)} runs ({len(outcome.runs) - len(ran)} done before), "
        f"{len(outcome.failed_runs)} failed; recorded in the Dagster instance"
    )
    for r in outcome.failed_runs:
        out.print(f"  [red]FAILED[/] {r.job_name} {r.partition or ''}")
    if outcome.checks:
        _results_table(outcome.checks, title="dataset tests")


def _results_table(results, title: str | None = None) -> None:
    from dagster_project.console import table

    rows = [(r.name, "pass" if r.passed else "FAIL", r.severity, r.message[:120]) for r in results]
    table(rows, ("check", "result", "severity", "detail"), title=title)


@batch.command("status")
@click.argument("name")
def batch_status(name: str) -> None:
    """Jobs done, failed and pending, per shard and in all (from S3 when the data is there)."""
    from dagster_project.console import table

    store = _existing_batch(name)
    state = _job_state(store, name)
    counts: dict[str, dict[str, int]] = {}
    for r in store.manifest(name, columns=["job_id", "shard"]).to_pylist():
        shard = counts.setdefault(r["shard"], {"done": 0, "failed": 0, "pending": 0})
        shard[state(r["job_id"])] += 1
    rows = [(s, c["done"], c["failed"], c["pending"]) for s, c in sorted(counts.items())]
    total = tuple(sum(r[i] for r in rows) for i in (1, 2, 3))
    table([*rows, ("all", *total)], ("shard", "done", "failed", "pending"))


def _job_state(store, name: str) -> Callable[[str], str]:
    """``done``, ``failed`` or ``pending`` for a job id of the batch. On S3 from one listing
    of the batch's archives folder, downloading nothing: an archive is uploaded once
    complete, so a listed one is done. Locally from the archives themselves."""
    from generators.labels import archive as arc
    from vario.run import shard as sh

    out, storage = store.archive_dir(name), _s3_storage()
    listed = storage.listed(out) if storage else None

    def state(job_id: str) -> str:
        archive, failure = sh.archive_path(out, job_id), sh.failure_path(out, job_id)
        if listed is None:
            done, failed = arc.is_complete(archive), failure.exists()
        else:
            done, failed = archive.name in listed, failure.name in listed
        return "done" if done else "failed" if failed else "pending"

    return state


@main.group()
def dataset() -> None:
    """Test a batch's data like code."""


@dataset.command("test")
@click.argument("batch")
@click.option(
    "--tests",
    "tests_file",
    type=SPEC,
    help="Thresholds [default: batch_templates/<template>.tests.yaml].",
)
def dataset_test(batch: str, tests_file: Path | None) -> None:
    """Run and record the dataset tests of BATCH; exit 1 when an ERROR check fails."""
    from dagster_project.console import fail
    from dagster_project.resources import dataset_tests
    from vario.quality import checks as quality

    store = _existing_batch(batch, fetch="archives")
    try:
        tests = (
            quality.load_tests(tests_file)
            if tests_file
            else dataset_tests().for_spec(store.spec(batch))
        )
    except quality.TestsFileError as exc:
        fail("invalid dataset tests:\n  " + "\n  ".join(exc.messages))
    results = quality.run_checks(store, batch, tests)
    recorded = quality.record_results(store, batch, results)
    if storage := _s3_storage():  # recorded where every machine reads them
        storage.publish(recorded)
    _results_table(results)
    if any(r.blocking for r in results):
        sys.exit(1)


@dataset.command("report")
@click.argument("batch")
def dataset_report(batch: str) -> None:
    """Write BATCH's HTML dataset report from its recorded test results; print its path."""
    from dagster_project.console import fail
    from vario.quality import checks as quality
    from vario.quality.report import write_report

    store = _existing_batch(batch, fetch="tables")
    if storage := _s3_storage():
        storage.fetch(quality.results_path(store, batch))
    results = quality.recorded_results(store, batch)
    if results is None:
        fail(f"no recorded dataset tests for {batch!r}: run `vario dataset test {batch}` first")
    path, _ = write_report(store, batch, results)
    click.echo(str(path))


@dataset.command("gap")
@click.argument("batch")
@click.argument("real")
@click.option("--model", help="Show this model's per-slice metrics on both sides.")
def dataset_gap(batch: str, real: str, model: str | None) -> None:
    """The domain gap between synthetic BATCH and real dataset REAL: a distance per
    distribution (Wasserstein, KS) and the HTML page with the plots; print its path."""
    from dagster_project.console import fail, table
    from vario.batch.spec import checked_batch
    from vario.quality.gap import domain_gap

    try:
        checked_batch(batch), checked_batch(real), model and checked_batch(model)
        gap = domain_gap(_store(), batch, real, model)
    except ValueError as exc:
        fail(str(exc))
    rows = [
        (d.name, d.unit, f"{d.wasserstein:.4g}", f"{d.ks:.3f}", f"{d.ks_p:.3g}")
        for d in gap.distances
    ]
    table(rows, ("distribution", "unit", "Wasserstein", "KS", "KS p"))
    click.echo(f"categories: total variation distance {gap.categories:.3f}")
    click.echo(str(gap.report))


@main.group()
def ingest() -> None:
    """Bring in real datasets (COCO) and model predictions (docs/real-data.md)."""


def _ingest(job: str, partition, dynamic: dict[str, str], config: dict, label: str) -> None:
    """Run an ingestion asset as a Dagster run in this process (the UI lists it), with a
    progress bar per step; print its one-line summary, or exit 2 for bad input."""
    from assets_defs.ingest import progress_sink
    from dagster_project.console import fail, progress
    from dagster_project.console import out as console
    from dagster_project.local_run import run_asset_job
    from vario.ingest.common import IngestError

    tasks: dict[str, int] = {}
    try:
        with progress() as bar:

            def update(step: str, done: int, total: int | None) -> None:
                if step not in tasks:
                    tasks[step] = bar.add_task(f"{label}: {step}", total=total, note="")
                bar.update(tasks[step], completed=done, total=total)

            token = progress_sink.set(update)
            try:
                result = run_asset_job(job, partition, dynamic, config)
            finally:
                progress_sink.reset(token)
    except (IngestError, ValueError) as exc:
        fail(str(exc))
    (event,) = result.get_asset_materialization_events()
    console.print(event.materialization.metadata["summary"].value, markup=False)


@ingest.command("dataset")
@click.argument("name")
@click.option(
    "--annotations",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The COCO instances JSON.",
)
@click.option(
    "--images",
    "images_dir",
    required=True,
    type=click.Path(file_okay=False, path_type=Path),
    help="The folder the JSON's file names are relative to.",
)
@click.option(
    "--map",
    "map_file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="YAML: the file's category names to catalog categories (null: leave out).",
)
def ingest_dataset(name: str, annotations: Path, images_dir: Path, map_file: Path | None) -> None:
    """Ingest a COCO dataset as real dataset NAME (a Dagster run of ``real_dataset``): a new
    version when the files changed, nothing when they did not. Exit 2, writing nothing, for
    bad input."""
    from dagster_project.console import fail
    from vario.batch.spec import checked_batch

    try:
        checked_batch(name)
    except ValueError as exc:
        fail(str(exc))
    config = {"annotations": str(annotations.absolute()), "images": str(images_dir.absolute())}
    if map_file:
        config["category_map"] = str(map_file.absolute())
    run_config = {"ops": {"real_dataset": {"config": config}}}
    _ingest("ingest_dataset_job", name, {"datasets": name}, run_config, name)


@ingest.command("predictions")
@click.argument("model")
@click.argument("dataset_name", metavar="DATASET")
@click.argument("source", type=click.Path(dir_okay=False, path_type=Path))
@click.option(
    "--images",
    type=click.Path(dir_okay=False, path_type=Path),
    help="COCO results on a batch: the COCO JSON of the Vario export the model saw.",
)
def ingest_predictions_cmd(
    model: str, dataset_name: str, source: Path, images: Path | None
) -> None:
    """Ingest MODEL's predictions on DATASET (a batch or a real dataset) from SOURCE: COCO
    results JSON or Parquet (a Dagster run of ``model_predictions``). Exit 2, writing
    nothing, if any row is bad."""
    import dagster as dg

    from dagster_project.console import fail
    from vario.batch.spec import checked_batch

    try:
        checked_batch(model), checked_batch(dataset_name)
    except ValueError as exc:
        fail(str(exc))
    config = {"source": str(source.absolute())}
    if images:
        config["images"] = str(images.absolute())
    partition = dg.MultiPartitionKey({"model": model, "dataset": dataset_name})
    dynamic = {"models": model, "datasets": dataset_name}
    run_config = {"ops": {"model_predictions": {"config": config}}}
    _ingest("ingest_predictions_job", partition, dynamic, run_config, f"{model} on {dataset_name}")


@main.command("export")
@click.argument("batch")
@click.option(
    "--format", "fmt", required=True, type=click.Choice(["coco", "yolo", "kitti", "bop", "hf"])
)
@click.option("--out", required=True, type=click.Path(path_type=Path), help="A new folder.")
@click.option("--where", help="Objects to keep: an expression over the objects table's columns.")
@click.option("--split", default="train=0.8,val=0.1,test=0.1", show_default=True)
@click.option("--split-seed", type=click.IntRange(0, 2**31 - 1), default=0, show_default=True)
@click.option("--frames", default="every", show_default=True, help="every, first or N (every Nth).")
@click.option("--task", type=click.Choice(["detect", "segment"]), help="YOLO: boxes or polygons.")
@click.option(
    "--augment",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Augmentations (YAML: transforms, copies, seed), applied with albumentations.",
)
@click.option(
    "--link/--copy",
    default=False,
    show_default=True,
    help="Images as hard links into the data folder's read-only image cache, or as copies.",
)
@click.option("--force", is_flag=True, help="Export even if an ERROR dataset test failed.")
def export(batch, fmt, out, where, split, split_seed, frames, task, augment, link, force) -> None:
    """Export BATCH, or the slice --where selects, in a training format (docs/exports.md).

    Frames are split by job (never one video in two splits); the folder appears only when
    complete, with export.json and checksums.sha256. A batch that failed an ERROR dataset
    test, or was never tested, is not exported unless --force. Exit 2 for a bad request."""
    from dagster_project.console import err, fail, progress
    from dagster_project.console import out as console
    from vario.export.run import export_batch
    from vario.export.select import ExportRequestError, parse_split
    from vario.export.worker import WorkerError
    from vario.quality import checks as quality

    store = _existing_batch(batch, fetch="archives")
    if not force:
        results = quality.recorded_results(store, batch)
        if results is None:
            fail(f"{batch!r} was never tested: run `vario dataset test {batch}`, or --force")
        blocking = [r.name for r in results if r.blocking]
        if blocking:
            err.print(
                f"error: {batch!r} failed ERROR dataset tests ({', '.join(blocking)}): "
                "not exported (--force to export anyway)",
                markup=False,
            )
            sys.exit(1)
    options = {"task": task} if task else {}
    try:
        with progress() as bar:
            task_id = bar.add_task(f"export {batch} as {fmt} jobs", total=None, note="")
            summary = export_batch(
                store,
                batch,
                fmt,
                out,
                where=where,
                split=parse_split(split),
                split_seed=split_seed,
                frames=frames,
                options=options,
                on_job=lambda done, total: bar.update(task_id, completed=done, total=total),
                augment=augment,
                link=link,
            )
    except ExportRequestError as exc:
        fail(str(exc))
    except (WorkerError, OSError) as exc:  # a damaged archive, a full disk: nothing was left
        err.print(f"error: export failed, nothing written: {exc}", markup=False)
        sys.exit(1)
    state = "already there, unchanged" if summary.up_to_date else "written"
    splits = ", ".join(
        f"{name} {summary.frames[name]} frames / {summary.objects[name]} objects"
        for name in summary.frames
    )
    console.print(f"{fmt} export {state}: {splits}", markup=False)
    click.echo(str(summary.out))


@main.command("query")
@click.argument("sql")
@click.option("--max-rows", default=40, show_default=True)
def query(sql: str, max_rows: int) -> None:
    """Run a read-only SQL query over the dataset's views: jobs, frames, objects, events.
    It reads the dataset's tables only, within VARIO_QUERY_* limits (docs/batches.md)."""
    import duckdb

    from dagster_project.console import fail
    from generators.settings import settings
    from vario.store import remote, sandbox
    from vario.store.layout import DataStore

    con = sandbox.connection(DataStore(settings().data_dir), remote.from_settings())
    try:
        with sandbox.time_limit(con):
            sandbox.relation(con, sql).show(max_rows=max_rows)
    except (sandbox.QueryRefused, sandbox.QueryTimedOut) as exc:
        fail(f"vario query: {exc}")
    except duckdb.Error as exc:
        fail(str(exc).splitlines()[0])


@main.command("eval")
@click.argument("model")
@click.argument("dataset")
@click.option(
    "--tests",
    "tests_file",
    type=SPEC,
    help="Slices and model tests (YAML); default batch_templates/<template>.model_tests.yaml.",
)
def evaluate(model: str, dataset: str, tests_file: Path | None) -> None:
    """Evaluate MODEL's predictions on DATASET per slice and run the model tests: a table of
    slice, metric, value, threshold and result; exit 1 if an ERROR test fails."""
    from dagster_project.console import fail, out, table
    from generators.params import FieldErrors
    from generators.settings import settings
    from vario.batch.spec import checked_batch
    from vario.evaluate.run import EvaluationError, evaluate_model
    from vario.evaluate.slices import dataset_spec, load_spec

    try:
        checked_batch(model), checked_batch(dataset)
        spec = (
            load_spec(tests_file)
            if tests_file
            else dataset_spec(_store(), settings().templates_dir, dataset)
        )
        result = evaluate_model(_store(), model, dataset, spec)
    except FieldErrors as exc:
        fail("; ".join(exc.messages))
    except (EvaluationError, ValueError) as exc:
        fail(str(exc))
    rows = [
        (name, f"{m.map:.3f}", f"{m.ap50:.3f}", f"{m.ap75:.3f}", f"{m.recall:.3f}", m.objects)
        for name, m in result.metrics.items()
    ]
    table(rows, ("slice", "mAP", "AP50", "AP75", "recall", "objects"), title="metrics")
    if result.tests:
        tests = [
            (
                t.slice,
                t.metric,
                f"{t.value:.3f}",
                f"{t.op} {t.threshold:g}",
                "pass" if t.passed else "FAIL",
                t.severity,
            )
            for t in result.tests
        ]
        table(
            tests,
            ("slice", "metric", "value", "threshold", "result", "severity"),
            title="model tests",
        )
    out.print(f"evaluation {result.id}: {result.folder}")
    if not result.passed:
        sys.exit(1)


@main.command("regenerate")
@click.option("--evaluation", "evaluation_id", required=True, help="The evaluation's id.")
@click.option("--slice", "slice_name", required=True, help="The failing slice.")
@click.option("--jobs", type=click.IntRange(1), required=True, help="Jobs in the new batch.")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), help="Spec file to write.")
def regenerate_cmd(evaluation_id: str, slice_name: str, jobs: int, out: Path | None) -> None:
    """Write a batch spec that samples the parameter region behind a failing slice
    (docs/evaluation.md); run it with ``vario batch run``."""
    import yaml

    from dagster_project import console
    from generators.labels.archive import write_atomic
    from vario.evaluate.regenerate import regenerate
    from vario.evaluate.run import EvaluationError

    try:
        spec = regenerate(_store(), evaluation_id, slice_name, jobs)
    except (EvaluationError, ValueError) as exc:
        console.fail(str(exc).splitlines()[0])
    target = out or Path(f"{spec['name']}.yaml")
    write_atomic(target, yaml.safe_dump(spec, sort_keys=False).encode())
    console.out.print(
        f"{target}: {jobs} jobs of {spec['generator']} ({spec['provenance']['method']})"
    )


@main.command("ui")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=3000, show_default=True, type=click.IntRange(1, 65535))
def ui(host: str, port: int) -> None:
    """Open the Dagster UI, with its daemon, on the project's instance until stopped
    (``dagster dev``). Only warnings and errors reach the terminal: the runs' event logs and
    the sensors' ticks are in the UI."""
    from dagster_project.console import out
    from dagster_project.instance import dagster_home, start_retry_consumer

    dagster_home()
    start_retry_consumer()
    out.print(f"Dagster UI on http://{host}:{port} (ready in seconds; Ctrl-C stops it)")
    command = (
        # ``dagster dev`` says it is superseded by ``dg dev`` of the dagster-dg-cli
        # package, which needs a dg project layout; it is the same deployment.
        *("-W", "ignore:Function `dev_command` is superseded"),
        *("-m", "dagster", "dev", "--log-level", "warning"),
        *("-m", "dagster_project.definitions", "-h", host, "-p", str(port)),
    )
    os.execvp(sys.executable, [sys.executable, *command])


@main.command("serve")
@click.option("--host", default="127.0.0.1", show_default=True, help="Loopback unless told.")
@click.option("--port", default=8000, show_default=True, type=click.IntRange(1, 65535))
@click.option("--no-daemon", is_flag=True, help="Do not start the Dagster daemon beside it.")
def serve(host: str, port: int, no_daemon: bool) -> None:
    """Serve the HTTP API (docs at /docs) and, unless --no-daemon, the Dagster daemon that
    runs the batches it queues (its sensors pick up the inbox), until stopped."""
    import uvicorn

    from dagster_project.console import err, out
    from dagster_project.instance import dagster_home, start_retry_consumer
    from vario.api.sendfile import FileSendingProtocol

    daemon = None
    if not no_daemon:
        dagster_home()
        start_retry_consumer()
        definitions = ("-m", "dagster_project.definitions")
        command = [sys.executable, "-m", "dagster._daemon", "run", *definitions]
        log = _store().root / "logs" / "daemon.log"
        log.parent.mkdir(parents=True, exist_ok=True)
        with log.open("ab") as sink:  # its event log belongs in the UI
            daemon = subprocess.Popen(
                command,
                stdout=sink,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # its own group: what it starts is stopped with it
            )
        try:
            daemon.wait(timeout=3)  # one that cannot start ends at once
        except subprocess.TimeoutExpired:
            pass
        else:
            err.print(f"error: the Dagster daemon did not start; {log}:", markup=False)
            err.print(log.read_text()[-2000:], markup=False)
            sys.exit(1)
    out.print(f"Vario API on http://{host}:{port} (docs: /docs)", markup=False)
    # uvicorn stops on SIGTERM, then raises it again: as SystemExit, so the daemon is stopped
    signal.signal(signal.SIGTERM, lambda signum, _: sys.exit(128 + signum))
    try:
        uvicorn.run(
            "dagster_project.api:served_app",
            factory=True,
            host=host,
            port=port,
            http=FileSendingProtocol,  # archives and export files by sendfile
            log_level="warning",
            access_log=False,
        )
    finally:
        if daemon is not None:
            _stop_group(daemon)


def _stop_group(leader: subprocess.Popen, grace: float = 30) -> None:
    """Stop ``leader`` and every process of its group: SIGTERM to all, ``grace`` seconds for
    the leader to end (the daemon stops its code servers and runs), then SIGKILL to whatever
    is left. A Dagster code server does not always end when told (its gRPC server can wait
    forever for a termination event that is never set), and once the daemon is gone
    nothing else would stop it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGTERM)
    with contextlib.suppress(subprocess.TimeoutExpired):
        leader.wait(timeout=grace)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(leader.pid, signal.SIGKILL)
    leader.wait()


@main.group("api-key")
def api_key() -> None:
    """Keys for the HTTP API (``vario serve``)."""


@api_key.command("create")
@click.option(
    "--scope",
    type=click.Choice(["read", "submit", "admin"]),
    default="read",
    show_default=True,
    help="read: look; submit: also queue batches; admin: everything.",
)
def api_key_create(scope: str) -> None:
    """Make a key and print it once: only its salted hash is kept."""
    from vario.api.keys import create_key

    click.echo(create_key(_store(), scope))


@main.command("demo")
@click.option("--workers", type=click.IntRange(1, 512), help="Worker processes per shard.")
@click.option("--verbose", is_flag=True, help="Print Dagster's event log too.")
def demo(workers: int | None, verbose: bool) -> None:
    """Run the demo batch through Dagster (real runs, kept in the project's instance), test
    it, and slice its labels with DuckDB."""
    from dagster_project.demo import print_summary, template

    spec = template()
    code = _run_batch(spec, _plan(spec), workers, verbose)
    print_summary()
    sys.exit(code)


if __name__ == "__main__":
    main()
