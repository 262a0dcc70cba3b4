"""The ``vario`` command line: inspect generators and run jobs without any orchestration.

Usage errors (an unknown generator, an invalid parameter) exit with code 2 before anything is
written.
"""

from __future__ import annotations

import json
import signal
import sys
from pathlib import Path

import click
from tqdm import tqdm

from generators import registry
from generators.params import ParameterError, describe, parse_assignments, validate

DEFAULT_DATA_DIR = Path("data")


def _fail(message: str) -> None:
    click.echo(f"error: {message}", err=True)
    sys.exit(2)


def _generator(name: str):
    try:
        return registry.get(name)
    except KeyError as exc:
        _fail(exc.args[0])


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
    docs = describe(gen.Params)
    header = ("parameter", "type", "default", "allowed", "description")
    rows = [(d.name, d.type, json.dumps(d.default), d.allowed, d.description) for d in docs]
    widths = [min(max(len(r[i]) for r in [header, *rows]), 40) for i in range(4)]
    click.echo(f"{gen.name} {gen.version}: {gen.description}\n")
    for row in [header, *rows]:
        cells = [
            c if len(c) <= w else c[: w - 3] + "..." for c, w in zip(row, widths, strict=False)
        ]
        click.echo(
            "  ".join(c.ljust(w) for c, w in zip(cells, widths, strict=False)) + "  " + row[4]
        )


def _run(
    name: str,
    assignments: list[str],
    seed: int,
    out: Path,
    batch_id: str,
    preview: bool = False,
    time_limit: float | None = None,
):
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
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR / "jobs")
@click.option("--batch-id", default="adhoc", show_default=True)
@click.option("--preview", is_flag=True, help="The same job with the fast renderer (tiny).")
@click.option("--time-limit", type=float, help="Seconds before an isolated job is stopped.")
def run(
    generator: str,
    assignments: tuple[str, ...],
    seed: int,
    out: Path,
    batch_id: str,
    preview: bool,
    time_limit: float | None,
):
    """Run one job of GENERATOR and print where its archive is (exit 1 if it failed)."""
    result = _run(generator, list(assignments), seed, out, batch_id, preview, time_limit)
    if result.archive is None:
        click.echo(f"error: job {result.job_id} failed: {result.error}", err=True)
        sys.exit(1)
    click.echo(str(result.archive))


@main.command("demo")
@click.option("--out", type=click.Path(path_type=Path), default=DEFAULT_DATA_DIR / "demo")
def demo(out: Path) -> None:
    """Run a short tabletop clip and slice its labels with DuckDB."""
    import duckdb

    result = _run("tabletop", ["n_objects=6", "n_frames=24", "start_time=0.2"], 7, out, "demo")
    labels = out / "labels"
    labels.mkdir(parents=True, exist_ok=True)
    for name in ("jobs", "frames", "objects"):
        import pyarrow.parquet as pq

        pq.write_table(getattr(result, name), labels / f"{name}.parquet")
    sql = (
        f"SELECT category, count(*) AS rows, round(avg(visible_pixels)) AS avg_pixels, "
        f"round(max(occlusion), 3) AS max_occlusion FROM '{labels}/objects.parquet' "
        "GROUP BY category ORDER BY category"
    )
    click.echo(f"archive: {result.archive}\nlabels:  {labels}/\n\n{sql}\n")
    click.echo(duckdb.sql(sql))


if __name__ == "__main__":
    main()
