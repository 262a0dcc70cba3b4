"""Where archives and tables go. The resource type lives beside the assets that use it;
``dagster_project.resources`` configures it from the environment.

``root`` is a local data folder laid out as ``generators.datastore`` describes. With
``s3_bucket`` set, that folder is a working copy of ``s3://<bucket>/<prefix>/``: specs are
pulled from the S3 inbox, a shard's spec, manifest and finished archives are fetched before
it runs (so a shard resumes on any machine), a batch being released is fetched whole,
everything a step writes is published, and the dataset's DuckDB views read the tables
straight from S3 through pyarrow's S3 filesystem.
"""

from pathlib import Path

import dagster as dg
import pyarrow.fs as pafs
from dagster_aws.s3 import S3Resource

from generators.labels import archive as arc
from vario.store.layout import SPEC_SUFFIXES, DataStore, free_name
from vario.store.remote import s3_tables


class StorageResource(dg.ConfigurableResource):
    root: str
    s3_bucket: str | None = None
    s3_prefix: str = "vario"
    s3_endpoint_url: str | None = None
    s3_region: str | None = None

    @property
    def store(self) -> DataStore:
        return DataStore(Path(self.root))

    def path(self, *parts: str) -> Path:
        path = Path(self.root).joinpath(*parts)
        path.mkdir(parents=True, exist_ok=True)
        return path

    # --- S3 working copy (every method is a no-op without a bucket) ---

    def _client(self):
        return S3Resource(
            endpoint_url=self.s3_endpoint_url, region_name=self.s3_region
        ).get_client()

    def _key(self, path: Path) -> str:
        return f"{self.s3_prefix}/{Path(path).relative_to(self.root).as_posix()}"

    def publish(self, *paths: Path) -> None:
        """Upload files of the working copy to the same place under the S3 prefix."""
        if not self.s3_bucket:
            return
        client = self._client()
        for path in paths:
            client.upload_file(str(path), self.s3_bucket, self._key(path))

    def fetch(self, *paths: Path) -> None:
        """Download files of the working copy that are missing locally and exist on S3."""
        if not self.s3_bucket:
            return
        client = self._client()
        for path in paths:
            if Path(path).exists():
                continue
            try:
                client.head_object(Bucket=self.s3_bucket, Key=self._key(path))
            except client.exceptions.ClientError:
                continue
            self._download(client, Path(path))

    def _download(self, client, path: Path) -> None:
        """One object to its place in the working copy, under a temporary name until whole."""
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.download")
        try:
            client.download_file(self.s3_bucket, self._key(path), str(partial))
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)

    def fetch_batch(self, batch: str, *, archives: bool = True) -> None:
        """Bring a batch into the working copy: its spec, manifest, label tables and, with
        ``archives``, its archives and failure records; each file only if missing here.
        Releasing a batch (its tests open archives, its export reads the tables) then works
        on a machine that rendered none of it."""
        if not self.s3_bucket:
            return
        store = self.store
        self.fetch(store.spec_path(batch), store.manifest_path(batch))
        folders = [store.table_dir(t, batch) for t in arc.LABEL_TABLES]
        folders += [store.archive_dir(batch)] if archives else []
        client = self._client()
        pages = client.get_paginator("list_objects_v2")
        for folder in folders:
            prefix = self._key(folder) + "/"
            for page in pages.paginate(Bucket=self.s3_bucket, Prefix=prefix):
                for item in page.get("Contents", []):  # listed, so there: no HEAD each
                    name = item["Key"][len(prefix) :]
                    if "/" not in name and not (folder / name).exists():
                        self._download(client, folder / name)

    def submit(self, spec_path: Path) -> str:
        """Put a spec in the inbox: the S3 inbox when there is a bucket, else the local one."""
        if not self.s3_bucket:
            return str(self.store.submit(spec_path))
        client = self._client()

        def held(path: Path) -> bytes | None:
            try:
                return client.get_object(Bucket=self.s3_bucket, Key=self._key(path))["Body"].read()
            except client.exceptions.NoSuchKey:
                return None

        data = Path(spec_path).read_bytes()
        key = self._key(free_name(self.store.inbox / Path(spec_path).name, data, held))
        client.put_object(Bucket=self.s3_bucket, Key=key, Body=data)
        return f"s3://{self.s3_bucket}/{key}"

    def pull_inbox(self) -> None:
        """Move specs from the S3 inbox into the local inbox."""
        if not self.s3_bucket:
            return
        client = self._client()
        prefix = self._key(self.store.inbox) + "/"
        listing = client.list_objects_v2(Bucket=self.s3_bucket, Prefix=prefix, Delimiter="/")
        for item in listing.get("Contents", []):
            name = item["Key"][len(prefix) :]
            if Path(name).suffix in SPEC_SUFFIXES:
                target = self.store.inbox / name
                target.parent.mkdir(parents=True, exist_ok=True)
                client.download_file(self.s3_bucket, item["Key"], str(target))
                client.delete_object(Bucket=self.s3_bucket, Key=item["Key"])

    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str] | None:
        """pyarrow's S3 filesystem and the base path of the data, or None when local."""
        if not self.s3_bucket:
            return None
        return s3_tables(self.s3_bucket, self.s3_prefix, self.s3_endpoint_url, self.s3_region)
