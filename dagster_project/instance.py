"""Embedded defaults: Dagster keeps its instance in ``.dagster_home`` of the working directory
unless ``DAGSTER_HOME`` says otherwise, configured by ``dagster_project/dagster.yaml``
(telemetry off, run monitoring, run retries) and by the settings: the run queue's limits
on shard runs per device (``VARIO_MAX_CPU_SHARD_RUNS``, ``VARIO_MAX_GPU_SHARD_RUNS``) and the
storage, SQLite in that folder or PostgreSQL when ``VARIO_DAGSTER_POSTGRES_URL`` is set: one
setting, the same code paths."""

from __future__ import annotations

import os
from pathlib import Path

from generators.labels.archive import write_atomic
from generators.settings import Settings, settings

DEFAULT_CONFIG = Path(__file__).with_name("dagster.yaml").read_text()
# The first line of every file Vario writes, now and before: such a file follows the settings.
MARKERS = (
    DEFAULT_CONFIG.splitlines()[0],
    "# The embedded instance's configuration, copied into $DAGSTER_HOME/dagster.yaml when",
)
# The queue Dagster's daemon launches runs from. Shard runs carry ``vario/device`` (see
# ``dagster_project.sensors``): at most so many at once on the CPU, and one per GPU.
RUN_QUEUE = """
# Runs wait in the queue until a slot is free. A shard run uses every worker it is given,
# so a few at a time keep the machine busy; a GPU shard run holds its GPU. The queue is
# looked at every second (Dagster's default, 5 s, would add 2.5 s to a run's launch).
run_coordinator:
  module: dagster.core.run_coordinator
  class: QueuedRunCoordinator
  config:
    dequeue_interval_seconds: 1
    tag_concurrency_limits:
      - key: vario/device
        value: cpu
        limit: {cpu}
      - key: vario/device
        value: gpu
        limit: {gpu}
"""
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


def default_config(s: Settings | None = None) -> str:
    """The instance configuration the settings ask for."""
    s = s or settings()
    queue = RUN_QUEUE.format(cpu=s.max_cpu_shard_runs, gpu=s.max_gpu_shard_runs)
    storage = POSTGRES_STORAGE if s.dagster_postgres_url is not None else ""
    return DEFAULT_CONFIG + queue + storage


def _ours(text: str) -> bool:
    return text.startswith(MARKERS) or text.strip() in {c.strip() for c in _OLD_DEFAULTS}


def dagster_home() -> Path:
    """The instance folder (created, with its configuration), exported as ``DAGSTER_HOME``
    so that ``DagsterInstance.get()`` and ``dagster dev`` open the same instance. A file
    Vario wrote follows the settings (queue limits, SQLite or PostgreSQL); a user's own is
    left as it is."""
    s = settings()
    home = s.dagster_home
    home.mkdir(parents=True, exist_ok=True)
    config = home / "dagster.yaml"
    wanted = default_config(s)
    written = config.read_text() if config.exists() else None
    if written is None or (_ours(written) and written != wanted):
        write_atomic(config, wanted.encode())
    os.environ["DAGSTER_HOME"] = str(home)
    return home


def start_retry_consumer() -> None:
    """Start the daemon's run-retry consumer at the end of the event log, as Dagster does on
    its first start, but without its warning ("No cursor for event type ..."): a fresh
    instance, or one only ``vario batch run`` has used, would print it on every first
    ``vario ui`` or ``vario serve``. A cursor already there is left alone. Dagster keeps the
    cursor under private names (pinned below 1.14, see pyproject)."""
    from dagster import DagsterInstance
    from dagster._daemon.auto_run_reexecution import event_log_consumer as consumer

    with DagsterInstance.get() as instance:
        keys = {consumer._create_cursor_key(t) for t in consumer.DAGSTER_EVENT_TYPES}
        missing = keys - set(instance.daemon_cursor_storage.get_cursor_values(keys))
        if missing:
            top = str(instance.event_log_storage.get_maximum_record_id() or 0)
            instance.daemon_cursor_storage.set_cursor_values(dict.fromkeys(missing, top))
