"""Vario's settings: every environment variable and default path, read in one place.

Each field reads ``VARIO_<NAME>`` (``DAGSTER_HOME`` for the Dagster instance), and relative
paths are taken from the working directory, so a checkout run from its root keeps ``data/``,
``.dagster_home/`` and ``batch_templates/`` beside the code and nothing is tied to where the
package is installed. The SDK, the platform, the Dagster wiring and the CLI all read
``settings()``; it lives in the lowest layer so that render workers read the same values.
Settings are read afresh on each call: a test or a command that changes the environment is
seen at once, and nothing is cached behind its back.
"""

from __future__ import annotations

import os
from pathlib import Path

from pydantic import AliasChoices, Field, field_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="VARIO_", extra="ignore")

    data_dir: Path = Field(Path("data"), description="The data folder (inbox, archives, tables).")
    dagster_home: Path = Field(
        Path(".dagster_home"),
        validation_alias=AliasChoices("DAGSTER_HOME"),
        description="The Dagster instance's folder (SQLite storage unless its dagster.yaml "
        "says otherwise).",
    )
    dagster_postgres_url: str | None = Field(
        None,
        description="Dagster's run, event log and schedule storage on PostgreSQL "
        "(postgresql+psycopg2://user:password@host:5432/db); SQLite in DAGSTER_HOME when unset.",
    )
    templates_dir: Path = Field(
        Path("batch_templates"), description="Batch templates and their dataset tests files."
    )
    catalog_dir: Path | None = Field(
        None, description="User meshes (<category>/<name>.obj); default <data_dir>/catalog."
    )
    cache_dir: Path = Field(
        Path.home() / ".cache" / "vario", description="Generated catalog assets (primitives)."
    )
    job_time_limit: float = Field(
        3600.0, gt=0, description="Seconds before an isolated (Cycles) job is stopped."
    )
    workers: int = Field(
        os.cpu_count() or 1, ge=1, le=512, description="Worker processes per shard run."
    )
    worker_niceness: int = Field(
        10,
        ge=0,
        le=19,
        description="How much lower than its shard's process a render worker runs (nice), so "
        "the API, the daemon and a shell on the same machine stay responsive while it renders.",
    )
    max_cpu_shard_runs: int = Field(
        2,
        ge=1,
        le=10_000,
        description="Shard runs on the CPU the run queue lets run at once (its "
        "vario/device: cpu limit); each uses VARIO_WORKERS processes.",
    )
    max_gpu_shard_runs: int = Field(
        1,
        ge=1,
        le=10_000,
        description="Shard runs on a GPU (Cycles, device gpu) the run queue lets run at once: "
        "the number of GPUs (vario/device: gpu).",
    )
    k8s_shard_cpus: int = Field(
        4,
        ge=1,
        le=256,
        description="On Kubernetes: CPUs a shard run's pod requests, and its render workers.",
    )
    k8s_shard_memory: str = Field(
        "8Gi",
        pattern=r"^[0-9]+(Mi|Gi)$",
        description="On Kubernetes: memory a shard run's pod requests and may use.",
    )
    k8s_gpu_image: str | None = Field(
        None,
        description="On Kubernetes: the image GPU shard pods run (the CUDA variant); "
        "default the code location's image.",
    )
    k8s_gpu_node_selector: dict[str, str] = Field(
        {"nvidia.com/gpu.present": "true"},
        description="On Kubernetes: the node labels a GPU shard pod needs (JSON).",
    )
    max_jobs: int = Field(1_000_000, ge=1, description="Jobs a batch may have, at most.")
    render_worker_jobs: int = Field(
        50, ge=1, description="Jobs a warm render (Cycles) worker runs before a fresh one."
    )
    sensor_interval: int = Field(15, ge=1, description="Seconds between sensor evaluations.")
    query_timeout: float = Field(30.0, gt=0, description="Seconds before a query is stopped.")
    query_memory_mb: int = Field(2048, ge=64, description="Memory a query may use, MiB.")
    query_threads: int = Field(2, ge=1, le=64, description="Threads a query may use.")
    query_max_rows: int = Field(100_000, ge=1, description="Rows a query returns, at most.")
    nightly_template: str | None = Field(
        None, description="Template the nightly schedule regenerates (on when set)."
    )
    nightly_cron: str = Field("0 2 * * *", description="When the nightly schedule runs.")
    s3_bucket: str | None = Field(None, description="S3 bucket; the data folder mirrors it.")
    s3_prefix: str = Field("vario", description="Key prefix of the data in the bucket.")
    s3_endpoint_url: str | None = Field(None, description="S3-compatible endpoint URL.")
    s3_region: str | None = Field(None, description="S3 region.")
    api_rate_per_minute: int = Field(
        1200, ge=1, description="HTTP API requests one key may make per minute."
    )
    api_max_body_bytes: int = Field(
        1 << 20, ge=1024, description="The largest HTTP API request body, in bytes."
    )
    api_cors_origins: list[str] = Field(
        [], description="Origins a browser may call the HTTP API from (none unless set)."
    )

    @field_validator("data_dir", "dagster_home", "templates_dir", "catalog_dir", "cache_dir")
    @classmethod
    def _absolute(cls, path: Path | None) -> Path | None:
        return path.expanduser().absolute() if path is not None else None

    @property
    def user_catalog_dir(self) -> Path:
        return self.catalog_dir or self.data_dir / "catalog"


def settings() -> Settings:
    """The settings as the environment gives them now."""
    return Settings()
