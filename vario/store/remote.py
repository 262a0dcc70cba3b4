"""The dataset's tables on S3, as pyarrow sees them: the one place an S3 location becomes a
filesystem, for the Dagster storage resource and for tools that run without Dagster."""

from __future__ import annotations

import pyarrow.fs as pafs

from generators.settings import settings


def s3_tables(
    bucket: str, prefix: str, endpoint_url: str | None, region: str | None
) -> tuple[pafs.FileSystem, str]:
    """pyarrow's S3 filesystem and the base path of the data on it."""
    s3 = pafs.S3FileSystem(
        region=region or "us-east-1",
        endpoint_override=endpoint_url.split("://", 1)[-1] if endpoint_url else None,
        scheme=endpoint_url.split("://", 1)[0] if endpoint_url else "https",
    )
    return s3, f"{bucket}/{prefix}"


def from_settings() -> tuple[pafs.FileSystem, str] | None:
    """The tables' S3 location from ``VARIO_S3_*``, or None when the data is local."""
    s = settings()
    if not s.s3_bucket:
        return None
    return s3_tables(s.s3_bucket, s.s3_prefix, s.s3_endpoint_url, s.s3_region)
