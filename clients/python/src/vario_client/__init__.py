"""Vario's HTTP API from Python: ``Client`` for generators, parameters, submissions and
queries; ``Batch`` to follow a batch and download its archives."""

from vario_client.batch import Batch, DownloadSummary
from vario_client.client import Client
from vario_client.errors import (
    ApiError,
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    RateLimited,
    ServerError,
    Unauthorized,
)
from vario_client.models import BatchStatus, GeneratorSummary, QueryResult

__all__ = [
    "ApiError",
    "Batch",
    "BatchStatus",
    "Client",
    "Conflict",
    "DownloadSummary",
    "Forbidden",
    "GeneratorSummary",
    "InvalidRequest",
    "NotFound",
    "QueryResult",
    "RateLimited",
    "ServerError",
    "Unauthorized",
]
