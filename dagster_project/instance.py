"""Embedded defaults: Dagster keeps its instance (SQLite) in the project's ``.dagster_home``
unless ``DAGSTER_HOME`` says otherwise."""

from __future__ import annotations

import os
from pathlib import Path

PROJECT_ROOT = Path(__file__).resolve().parent.parent


def dagster_home() -> Path:
    """``$DAGSTER_HOME``, or ``.dagster_home`` in the project (created, and exported)."""
    home = Path(os.environ.get("DAGSTER_HOME") or PROJECT_ROOT / ".dagster_home")
    home.mkdir(parents=True, exist_ok=True)
    (home / "dagster.yaml").touch()  # empty: SQLite storage inside this folder
    os.environ["DAGSTER_HOME"] = str(home)
    return home
