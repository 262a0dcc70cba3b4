"""Embedded defaults: Dagster keeps its instance in ``.dagster_home`` of the working directory
unless ``DAGSTER_HOME`` says otherwise, configured by ``dagster_project/dagster.yaml``
(telemetry off, run monitoring, run retries). Its storage is SQLite in that folder, or
PostgreSQL when ``VARIO_DAGSTER_POSTGRES_URL`` is set: one setting, the same code paths."""

from __future__ import annotations

import os
from pathlib import Path

from generators.settings import settings

DEFAULT_CONFIG = Path(__file__).with_name("dagster.yaml").read_text()
# The URL is read from the environment when the instance opens: no password in the file.
POSTGRES_STORAGE = """
# Runs, event logs and schedules on PostgreSQL (VARIO_DAGSTER_POSTGRES_URL). The psycopg2
# driver: Dagster's event watching relies on its LISTEN/NOTIFY support.
storage:
  postgres:
    postgres_url:
      env: VARIO_DAGSTER_POSTGRES_URL
"""
# what earlier versions wrote: replaced by the current default, unlike a user's own file
_OLD_DEFAULTS = ("", "telemetry:\n  enabled: false\n")


def default_config() -> str:
    """The instance configuration the settings ask for."""
    postgres = settings().dagster_postgres_url is not None
    return DEFAULT_CONFIG + (POSTGRES_STORAGE if postgres else "")


def dagster_home() -> Path:
    """The instance folder (created, with its configuration), exported as ``DAGSTER_HOME``
    so that ``DagsterInstance.get()`` and ``dagster dev`` open the same instance. A file
    Vario wrote follows the settings (SQLite or PostgreSQL); a user's own is left as it is."""
    home = settings().dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    ours = {*_OLD_DEFAULTS, DEFAULT_CONFIG, DEFAULT_CONFIG + POSTGRES_STORAGE}
    if not config.exists() or config.read_text().strip() in {c.strip() for c in ours}:
        config.write_text(default_config())
    os.environ["DAGSTER_HOME"] = str(home)
    return home
