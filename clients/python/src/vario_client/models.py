"""What the API answers, typed (a subset of its OpenAPI schema: what the client reads)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel


class GeneratorSummary(BaseModel):
    name: str
    version: str
    description: str


class GeneratorDetail(GeneratorSummary):
    parameters: dict[str, Any]
    semantic: list[str]
    nuisance: list[str]


class Counts(BaseModel):
    done: int
    failed: int
    pending: int


class TestResult(BaseModel):
    name: str
    passed: bool
    severity: str
    message: str


class BatchStatus(BaseModel):
    name: str
    state: Literal["queued", "rejected", "pending", "running", "rendered", "done", "cancelled"]
    generator: str | None = None
    jobs: int = 0
    counts: Counts | None = None
    progress: float = 0.0
    eta_seconds: float | None = None
    tests: list[TestResult] | None = None
    errors: list[str] | None = None


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
    status: Literal["done", "failed", "pending"]


class QueryResult(BaseModel):
    columns: list[str]
    rows: list[list[Any]]
    truncated: bool
