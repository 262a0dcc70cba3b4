"""Embedded defaults: Dagster keeps its instance (SQLite) in ``.dagster_home`` of the working
directory unless ``DAGSTER_HOME`` says otherwise, with telemetry off."""

from __future__ import annotations

import os
from pathlib import Path

from generators.settings import settings

# Written only into a missing or empty dagster.yaml: a user's own configuration is kept.
DEFAULT_CONFIG = "telemetry:\n  enabled: false\n"


def dagster_home() -> Path:
    """The instance folder (created, with its configuration), exported as ``DAGSTER_HOME``
    so that ``DagsterInstance.get()`` and ``dagster dev`` open the same instance."""
    home = settings().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or not config.read_text().strip():
        config.write_text(DEFAULT_CONFIG)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
