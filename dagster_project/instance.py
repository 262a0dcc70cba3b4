"""Embedded defaults: Dagster keeps its instance (SQLite) in ``.dagster_home`` of the working
directory unless ``DAGSTER_HOME`` says otherwise, configured by ``dagster_project/dagster.yaml``
(telemetry off, run monitoring, run retries)."""

from __future__ import annotations

import os
from pathlib import Path

from generators.settings import settings

DEFAULT_CONFIG = Path(__file__).with_name("dagster.yaml").read_text()
# what earlier versions wrote: replaced by the current default, unlike a user's own file
_OLD_DEFAULTS = ("", "telemetry:\n  enabled: false\n")


def dagster_home() -> Path:
    """The instance folder (created, with its configuration), exported as ``DAGSTER_HOME``
    so that ``DagsterInstance.get()`` and ``dagster dev`` open the same instance."""
    home = settings().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    if not config.exists() or config.read_text().strip() in map(str.strip, _OLD_DEFAULTS):
        config.write_text(DEFAULT_CONFIG)
    os.environ["DAGSTER_HOME"] = str(home)
    return home
