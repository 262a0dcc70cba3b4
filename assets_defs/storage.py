"""Where archives and tables go. The resource type lives beside the assets that use it;
``dagster_project.resources`` configures it from the environment.

``root`` is a local data folder laid out as ``generators.datastore`` describes. With
``s3_bucket`` set, that folder is a working copy of ``s3://<bucket>/<prefix>/``: specs are
pulled from the S3 inbox, a shard's spec, manifest and finished archives are fetched before
it runs (so a shard resumes on any machine), a batch being released is fetched whole,
everything a step writes is published, and the dataset's DuckDB views read the tables
straight from S3 through pyarrow's S3 filesystem. Only S3's "no such key" means a file is
absent; every other error raises ``StorageError``.
"""

import shutil
from pathlib import Path

import dagster as dg
import pyarrow.fs as pafs
from boto3.s3.transfer import TransferConfig
from botocore.exceptions import ClientError
from dagster_aws.s3 import S3Resource

from generators.labels import archive as arc
from vario.store.layout import SPEC_SUFFIXES, DataStore, free_name
from vario.store.remote import s3_tables

# The error codes by which S3 says a key does not exist ("404" is a HEAD's, which has no body).
# Nothing else means absent: a denied, throttled or failed request, or a missing bucket, raises.
ABSENT = frozenset({"404", "NoSuchKey", "NotFound"})
# Objects of 16 MiB or more (archives of long clips, export shards) are uploaded in 16 MiB
# parts, four at a time: a failed part is sent again alone, and S3's 5 GiB limit on a single
# PUT never applies.
MULTIPART = TransferConfig(
    multipart_threshold=16 * 2**20, multipart_chunksize=16 * 2**20, max_concurrency=4
)


class StorageError(OSError):
    """An S3 request failed for a reason other than a missing key. Taking it for "absent"
    would silently skip a spec, a manifest or finished archives (a shard would render again
    what it has, a release would test half a batch); an ``OSError``, it is retried like any
    fault of the store."""


def _code(error: ClientError) -> str:
    return str(error.response.get("Error", {}).get("Code", "unknown"))


def _failure(error: ClientError, bucket: str, key: str) -> StorageError:
    """A short message naming the object (or prefix) and what S3 answered."""
    message = error.response.get("Error", {}).get("Message", "")
    return StorageError(f"s3://{bucket}/{key}: {_code(error)} {message}".strip())


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
        """Upload files of the working copy to the same place under the S3 prefix; one
        larger than ``MULTIPART`` goes up in parts, several at once, each retried alone."""
        if not self.s3_bucket:
            return
        client = self._client()
        for path in paths:
            client.upload_file(str(path), self.s3_bucket, self._key(path), Config=MULTIPART)

    def publish_tree(self, folder: Path) -> None:
        """Upload every file under a folder of the working copy (an export)."""
        self.publish(*sorted(p for p in Path(folder).rglob("*") if p.is_file()))

    def fetch(self, *paths: Path) -> None:
        """Download files of the working copy that are missing locally and exist on S3; a
        key S3 reports missing is skipped, any other error raises ``StorageError``."""
        if not self.s3_bucket:
            return
        client = self._client()
        for path in paths:
            if not Path(path).exists():
                self._download(client, Path(path))

    def _download(self, client, path: Path) -> bool:
        """One object to its place in the working copy, under a temporary name until whole;
        False when S3 says the key does not exist. One GET, not HEAD then GET: a HEAD has no
        body, so a missing bucket would look like a missing key."""
        body = self._body(client, self._key(path))
        if body is None:
            return False
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_name(f".{path.name}.download")
        try:
            with body, partial.open("wb") as out:
                shutil.copyfileobj(body, out, 1 << 20)
            partial.replace(path)
        finally:
            partial.unlink(missing_ok=True)
        return True

    def _body(self, client, key: str):
        """The object's streaming body, or None when S3 says the key does not exist."""
        try:
            return client.get_object(Bucket=self.s3_bucket, Key=key)["Body"]
        except ClientError as exc:
            if _code(exc) in ABSENT:
                return None
            raise _failure(exc, self.s3_bucket, key) from exc

    def listed(self, folder: Path) -> set[str]:
        """Names of the objects directly in a working-copy folder on S3 (empty without a
        bucket): what is there, without downloading it."""
        if not self.s3_bucket:
            return set()
        prefix = self._key(folder) + "/"
        pages = self._client().get_paginator("list_objects_v2")
        try:
            return {
                item["Key"][len(prefix) :]
                for page in pages.paginate(Bucket=self.s3_bucket, Prefix=prefix, Delimiter="/")
                for item in page.get("Contents", [])
            }
        except ClientError as exc:
            raise _failure(exc, self.s3_bucket, prefix) from exc

    def batch_names(self) -> set[str]:
        """The batches recorded on S3 (empty without a bucket): the folders under batches/."""
        if not self.s3_bucket:
            return set()
        prefix = self._key(self.store.root / "batches") + "/"
        pages = self._client().get_paginator("list_objects_v2")
        try:
            return {
                item["Prefix"][len(prefix) :].rstrip("/")
                for page in pages.paginate(Bucket=self.s3_bucket, Prefix=prefix, Delimiter="/")
                for item in page.get("CommonPrefixes", [])
            }
        except ClientError as exc:
            raise _failure(exc, self.s3_bucket, prefix) from exc

    def fetch_batch(self, batch: str, *, archives: bool = True) -> None:
        """Bring a batch into the working copy: its spec, manifest, label tables and, with
        ``archives``, its archives and failure records; each file only if missing here.
        Releasing a batch (its tests open archives, its export reads the tables) then works
        on a machine that rendered none of it."""
        if not self.s3_bucket:
            return
        store = self.store
        folders = [store.table_dir(t, batch) for t in arc.LABEL_TABLES]
        folders += [store.archive_dir(batch)] if archives else []
        listed = [folder / name for folder in folders for name in self.listed(folder)]
        self.fetch(store.spec_path(batch), store.manifest_path(batch), *listed)

    def submit(self, spec_path: Path) -> str:
        """Put a spec in the inbox: the S3 inbox when there is a bucket, else the local one."""
        if not self.s3_bucket:
            return str(self.store.submit(spec_path))
        client = self._client()

        def held(path: Path) -> bytes | None:
            body = self._body(client, self._key(path))
            return None if body is None else body.read()

        data = Path(spec_path).read_bytes()
        key = self._key(free_name(self.store.inbox / Path(spec_path).name, data, held))
        client.put_object(Bucket=self.s3_bucket, Key=key, Body=data)
        return f"s3://{self.s3_bucket}/{key}"

    def pull_inbox(self) -> None:
        """Copy specs of the S3 inbox that are not in the local inbox. They stay on S3 until
        ``settle``: a working copy lost before its spec was registered loses nothing."""
        if not self.s3_bucket:
            return
        client = self._client()
        prefix = self._key(self.store.inbox) + "/"
        listing = client.list_objects_v2(Bucket=self.s3_bucket, Prefix=prefix, Delimiter="/")
        for item in listing.get("Contents", []):
            name = item["Key"][len(prefix) :]
            if Path(name).suffix in SPEC_SUFFIXES and not (self.store.inbox / name).exists():
                self._download(client, self.store.inbox / name)

    def settle(self, spec_path: Path, *moved: Path) -> None:
        """A spec has left the inbox (for ``moved``, its new place and error file): publish
        those and remove it from the S3 inbox."""
        if not self.s3_bucket:
            return
        self.publish(*moved)
        self._client().delete_object(Bucket=self.s3_bucket, Key=self._key(spec_path))

    def arrow_filesystem(self) -> tuple[pafs.FileSystem, str] | None:
        """pyarrow's S3 filesystem and the base path of the data, or None when local."""
        if not self.s3_bucket:
            return None
        return s3_tables(self.s3_bucket, self.s3_prefix, self.s3_endpoint_url, self.s3_region)
