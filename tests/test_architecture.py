"""The layers hold: import-linter's contracts (pyproject.toml) pass on the tree, and fail on a
copy of it with an import that breaks them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LINT_IMPORTS = str(Path(sys.executable).with_name("lint-imports"))
PACKAGES = ("generators", "vario", "assets_defs", "dagster_project")


def lint_imports(root: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [LINT_IMPORTS, "--no-cache", "--config", str(root / "pyproject.toml")],
        cwd=root,
        env={**os.environ, "PYTHONPATH": str(root)},
        capture_output=True,
        text=True,
    )


def test_import_contracts_are_kept():
    result = lint_imports(ROOT)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        ("generators/params.py", "import dagster", "never import Dagster"),
        ("generators/scene/geometry.py", "import vario.batch.plan", "Layers: dagster_project"),
        ("vario/batch/spec.py", "import assets_defs.batches", "Layers: dagster_project"),
        ("generators/sim/physics.py", "import generators.job", "Inside the SDK"),
        ("vario/store/layout.py", "import vario.quality.checks", "Inside the platform"),
        ("generators/scene/geometry.py", "import generators.scene.description", "No import"),
    ],
)
def test_a_wrong_import_breaks_a_contract(tmp_path, module, line, broken):
    for package in PACKAGES:
        shutil.copytree(ROOT / package, tmp_path / package)
    shutil.copy(ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    target = tmp_path / module
    target.write_text(target.read_text() + f"\n{line}  # noqa\n")
    result = lint_imports(tmp_path)
    assert result.returncode == 1, result.stdout
    broken_lines = [ln for ln in result.stdout.splitlines() if ln.endswith("BROKEN")]
    assert any(broken in ln for ln in broken_lines), result.stdout
