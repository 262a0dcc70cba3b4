"""Mutation testing (mutmut 3) of the parameter rules, batch planning and dataset tests
against their fast tests (no rendering): per module, how many mutants there are and how many
the tests kill, let survive or time out, and the wall time of the whole run.

Each module is mutated in a fresh working folder outside the checkout (``--workdir``, default
``<temp>/vario-mutation/<module>``: links to the packages, tests and docs, pyproject.toml with
a ``[tool.mutmut]`` section from ``MODULES``; mutmut writes ``mutants/`` and ``mutmut.log``
there). Each mutant runs only the selected tests that call the function it changes, on one
worker. "no tests": mutants no selected test reaches; "other": mutmut's "suspicious" and
crashed runs. Only "killed" counts as killed. About 25 minutes on one core.

    uv run python benchmarks/mutation.py [--module params|plan|checks]

Target: at least ``TARGET`` of the mutants of ``params`` and ``checks`` killed (exit 1 if not).
"""

from __future__ import annotations

import argparse
import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from mutmut.stats import status_by_exit_code

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ["generators", "vario", "assets_defs", "dagster_project"]
LINKED = [*PACKAGES, "tests", "docs"]  # the tests read docs/dataset-tests.md
TARGET = 0.8
GATED = ("params", "checks")
# module -> (files mutated, pytest arguments selecting its fast tests: no rendering)
MODULES = {
    "params": (
        ["generators/params.py"],
        [
            "tests/test_contract.py",
            "tests/test_params_rules.py",
            "--deselect=tests/test_contract.py::test_cli_run_prints_the_archive_path",
        ],
    ),
    "plan": (["vario/batch/plan.py", "vario/batch/samplers.py"], ["tests/test_batches.py"]),
    "checks": (
        ["vario/quality/checks.py"],
        [
            "tests/test_checks_rules.py",
            "tests/test_quality.py::test_invalid_thresholds_files_get_a_clear_error",
        ],
    ),
}
COLUMNS = ("total", "killed", "survived", "no tests", "timeout", "other")


def _config(files: list[str], tests: list[str]) -> str:
    return "\n[tool.mutmut]\n" + "\n".join(
        f"{key} = {json.dumps(value)}"
        for key, value in {
            "source_paths": PACKAGES,
            "also_copy": ["docs"],
            "only_mutate": files,
            "pytest_add_cli_args_test_selection": tests,
            "pytest_add_cli_args": ["-n", "0", "-p", "no:cacheprovider"],
            "use_git_change_detection": False,
        }.items()
    )


def run_module(name: str, workdir: Path) -> dict[str, Counter]:
    """Mutmut over one module in a fresh folder; the status counts of each file."""
    files, tests = MODULES[name]
    work = workdir / name
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir(parents=True)
    for link in LINKED:
        (work / link).symlink_to(ROOT / link, target_is_directory=True)
    (work / "pyproject.toml").write_text(
        (ROOT / "pyproject.toml").read_text() + _config(files, tests)
    )
    print(f"{name}: mutmut over {', '.join(files)} (log: {work / 'mutmut.log'})", file=sys.stderr)
    with open(work / "mutmut.log", "w") as log:
        command = [sys.executable, "-m", "mutmut", "run", "--max-children", "1"]
        rc = subprocess.run(command, cwd=work, stdout=log, stderr=subprocess.STDOUT).returncode
    if rc != 0:
        sys.exit(f"mutmut failed on {name} (exit {rc}); see {work / 'mutmut.log'}")
    counts = {}
    for path in files:
        codes = json.loads((work / "mutants" / f"{path}.meta").read_text())["exit_code_by_key"]
        statuses = Counter(status_by_exit_code[c] for c in codes.values())
        known = {k: statuses[k] for k in COLUMNS[1:5]}
        counts[path] = Counter(total=len(codes), other=len(codes) - sum(known.values()), **known)
    return counts


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--module", choices=list(MODULES), action="append")
    parser.add_argument(
        "--workdir", type=Path, default=Path(tempfile.gettempdir()) / "vario-mutation"
    )
    args = parser.parse_args()

    start = time.perf_counter()
    rows, below = {}, []
    for name in args.module or MODULES:
        counts = run_module(name, args.workdir)
        rows.update(counts)
        killed = sum(c["killed"] for c in counts.values())
        total = sum(c["total"] for c in counts.values())
        if name in GATED and killed < TARGET * total:
            below.append(name)
    wall = time.perf_counter() - start

    print(f"{'module':<26}" + "".join(f"{c:>10}" for c in COLUMNS) + f"{'killed %':>10}")
    for label, c in [*rows.items(), ("total", sum(rows.values(), Counter()))]:
        share = f"{100 * c['killed'] / c['total']:.1f}" if c["total"] else "-"
        print(f"{label:<26}" + "".join(f"{c[k]:>10}" for k in COLUMNS) + f"{share:>10}")
    print(f"wall time {wall:.0f} s; target: {TARGET:.0%} killed in {', '.join(GATED)}")
    if below:
        sys.exit(f"below target: {', '.join(below)}")


if __name__ == "__main__":
    main()
