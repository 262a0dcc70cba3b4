"""The API's typed request and response bodies (its OpenAPI schema is made from these)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

ID_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"  # every id in a path: batch, job, generator
JOB_STATE = Literal["done", "failed", "pending"]


class GeneratorSummary(BaseModel):
    name: str
    version: str
    description: str


class GeneratorDetail(GeneratorSummary):
    parameters: dict[str, Any] = Field(description="The parameters' JSON Schema.")
    semantic: list[str] = Field(description="Parameters that change the task's answer.")
    nuisance: list[str] = Field(description="Parameters that must not (light, camera...).")


class Parameters(BaseModel):
    model_config = ConfigDict(extra="forbid")
    params: dict[str, Any] = Field(description="Parameter values by name.")


class ValidParameters(BaseModel):
    valid: bool = True
    params: dict[str, Any] = Field(
        description="validate: every parameter, defaults filled in; sample: those drawn."
    )


class SampleRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    seed: int = Field(0, ge=0, le=2**32 - 1)


class Counts(BaseModel):
    done: int
    failed: int
    pending: int


class TestResult(BaseModel):
    name: str
    passed: bool
    severity: str
    message: str


class BatchSummary(BaseModel):
    name: str
    generator: str
    jobs: int


class BatchPage(BaseModel):
    batches: list[BatchSummary]
    next_cursor: str | None = Field(description="Pass as ?cursor= for the next page.")


class BatchStatus(BaseModel):
    name: str
    state: Literal["queued", "rejected", "pending", "running", "rendered", "done", "cancelled"]
    generator: str | None = None
    jobs: int = 0
    counts: Counts | None = None
    progress: float = Field(0.0, description="Share of jobs ended (done or failed).")
    eta_seconds: float | None = Field(None, description="Seconds left at the rate so far.")
    tests: list[TestResult] | None = Field(None, description="The dataset tests, once run.")
    errors: list[str] | None = Field(None, description="Why a submitted spec was rejected.")


class Submitted(BaseModel):
    name: str
    jobs: int
    shards: int
    state: Literal["queued", "recorded"]


class JobRow(BaseModel):
    job_index: int
    job_id: str
    shard: str
    seed: int
    status: JOB_STATE


class JobPage(BaseModel):
    jobs: list[JobRow]
    next_cursor: int | None = Field(description="Pass as ?cursor= for the next page.")


class Job(BaseModel):
    job_id: str
    batch: str
    job_index: int
    shard: str
    seed: int
    params: dict[str, Any]
    status: JOB_STATE
    timing: dict[str, float] | None = Field(None, description="Seconds per stage, once done.")
    error: str | None = None
    archive_sha256: str | None = Field(None, description="The archive's SHA-256, once done.")
    archive_bytes: int | None = None


class QueryRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    sql: str = Field(max_length=100_000, description="One read-only statement.")
    max_rows: int = Field(1000, ge=1, le=100_000)
    format: Literal["json", "arrow"] = "json"


class QueryResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool = Field(description="Whether max_rows cut the result short.")
