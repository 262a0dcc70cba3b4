"""S3 storage through dagster-aws, against a real S3-compatible server on loopback (moto's):
specs through the S3 inbox, archives and tables published, the dataset read from S3, and a
shard resumed on a machine with an empty working copy; errors other than "not found" raise;
views over batches of different generators; status, dataset tests and the export from
machines with empty working copies."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import boto3
import dagster as dg
import pytest
import requests
import yaml
from dagster._core.storage.tags import RUN_KEY_TAG
from moto.server import ThreadedMotoServer
from test_api import start_server, stop
from vario_client import Client

from assets_defs.batches import batch_manifest, batches, dataset, shard, shards
from assets_defs.exports import dataset_export
from assets_defs.quality import DatasetTestsResource, batch_dataset, batch_export
from assets_defs.storage import MULTIPART, StorageError, StorageResource
from dagster_project.local_run import evaluate_sensor
from dagster_project.sensors import inbox_sensor
from vario.api.keys import create_key
from vario.batch.plan import plan
from vario.batch.spec import BatchSpec
from vario.store import views as ds
from vario.store.layout import DataStore

BUCKET = "vario-test"
SPEC = {
    "name": "clouds",
    "generator": "tabletop",
    "seed": 2,
    "shard_size": 2,
    "fixed": {"resolution": 64, "n_objects": 2},
    "sampler": {"kind": "random", "count": 3, "ranges": {"fov": [30, 60]}},
}


@pytest.fixture(scope="module")
def s3_endpoint():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port)
    server.start()
    with pytest.MonkeyPatch.context() as mp:
        # only this server and these keys, whatever the machine has configured: no profile,
        # session token or endpoint of its own, and no proxy between us and loopback
        for name in ("AWS_PROFILE", "AWS_SESSION_TOKEN", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
            mp.delenv(name, raising=False)
        for name, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
        }.items():
            mp.setenv(name, value)
        for name in ("NO_PROXY", "no_proxy"):
            mp.setenv(name, ",".join(filter(None, ["127.0.0.1", os.environ.get(name)])))
        url = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
        yield url
    server.stop()


def _storage(root, url, prefix: str = "vario", bucket: str = BUCKET) -> StorageResource:
    return StorageResource(
        root=str(root),
        s3_bucket=bucket,
        s3_prefix=prefix,
        s3_endpoint_url=url,
        s3_region="us-east-1",
    )


def _keys(url: str) -> set[str]:
    listing = boto3.client("s3", endpoint_url=url).list_objects_v2(Bucket=BUCKET)
    return {item["Key"] for item in listing.get("Contents", [])}


def test_a_batch_runs_through_s3_and_resumes_anywhere(tmp_path, s3_endpoint):
    spec_file = tmp_path / "clouds.yaml"
    spec_file.write_text(yaml.safe_dump(SPEC))
    here = _storage(tmp_path / "machine_a", s3_endpoint)
    assert here.submit(spec_file) == f"s3://{BUCKET}/vario/inbox/clouds.yaml"
    with dg.instance_for_test() as instance:
        result = evaluate_sensor(inbox_sensor, instance, here)
        shards = [r.partition_key for r in result.run_requests if r.partition_key != "clouds"]
        for request in result.run_requests:  # launched as the daemon would: with run keys
            assert dg.materialize(
                [batch_manifest if request.partition_key == "clouds" else shard],
                partition_key=request.partition_key,
                instance=instance,
                resources={"storage": here},
                tags={**request.tags, RUN_KEY_TAG: request.run_key},
            ).success
        assert "vario/inbox/clouds.yaml" in _keys(s3_endpoint)  # until a tick sees it registered
        evaluate_sensor(inbox_sensor, instance, here)
        keys = _keys(s3_endpoint)
        assert "vario/inbox/clouds.yaml" not in keys  # taken from the S3 inbox
        assert "vario/inbox/processed/clouds.yaml" in keys
        assert {"vario/batches/clouds/spec.json", "vario/batches/clouds/manifest.parquet"} <= keys
        assert sum(k.startswith("vario/archives/clouds/") for k in keys) == 3
        assert "vario/tables/objects/batch=clouds/clouds~00001.parquet" in keys

        # another machine with an empty working copy: the dataset reads the tables from S3,
        # and re-running a shard fetches its finished archives instead of rendering them
        there = _storage(tmp_path / "machine_b", s3_endpoint)
        con = ds.connect(there.store, there.arrow_filesystem())
        assert con.execute("SELECT count(*), count(DISTINCT batch) FROM jobs").fetchall() == [
            (3, 1)
        ]
        assert con.execute("SELECT count(DISTINCT job_id) FROM objects").fetchall() == [(3,)]
        assert dg.materialize(
            [batch_manifest],
            partition_key="clouds",
            instance=instance,
            resources={"storage": there},
        ).success
        assert dg.materialize([dataset], instance=instance, resources={"storage": there}).success
        resumed = dg.materialize(
            [shard], partition_key=shards[0], instance=instance, resources={"storage": there}
        )
        metadata = resumed.asset_materializations_for_node("shard")[0].metadata
        assert metadata["jobs skipped"].value == 2 and metadata["jobs ok"].value == 0

        # a third machine, empty, releases the batch: its tests open archives fetched from
        # S3, and the export holds every job; both are published back
        release = _storage(tmp_path / "machine_c", s3_endpoint)
        # three jobs cannot cover a domain: those tests only warn, integrity stays an ERROR
        warn = {name: {"severity": "WARN"} for name in ("coverage", "bias", "balance")}
        (tmp_path / "clouds.tests.yaml").write_text(yaml.safe_dump(warn))
        released = dg.materialize(
            [batch_dataset, batch_export],
            partition_key="clouds",
            instance=instance,
            resources={
                "storage": release,
                "dataset_tests": DatasetTestsResource(templates=str(tmp_path)),
            },
        )
        assert released.success
        checks = {c.check_name: c for c in released.get_asset_check_evaluations()}
        assert checks["integrity"].passed, checks["integrity"].metadata["message"].value
        figures = checks["integrity"].metadata["figures"].value
        assert figures["jobs"] == 3 and figures["archives sampled"] == 3
        export = released.asset_materializations_for_node("batch_export")[0].metadata
        assert export["jobs rows"].value == 3 and export["objects rows"].value > 0

        # the export alone, on one more empty machine, fetches the tables (not the archives)
        exporter = _storage(tmp_path / "machine_d", s3_endpoint)
        exported = dg.materialize(
            [batch_export],
            partition_key="clouds",
            instance=instance,
            resources={"storage": exporter},
        )
        again = exported.asset_materializations_for_node("batch_export")[0].metadata
        assert again["jobs rows"].value == 3 and again["objects rows"] == export["objects rows"]
        assert not (tmp_path / "machine_d" / "archives").exists()
    keys = _keys(s3_endpoint)
    assert {"vario/batches/clouds/tests.json", "vario/exports/clouds/objects.parquet"} <= keys


# Two batches of different generators (different ``param_*`` columns) under their own prefix,
# rendered once for the tests below; each test reads them from a machine of its own.
PREFIX = "two"
TWO = [
    {
        "name": "desk",
        "generator": "tabletop",
        "seed": 3,
        "shard_size": 2,
        "fixed": {"resolution": 64, "n_objects": 2, "n_frames": 1, "n_distractors": 0},
        "sampler": {
            "kind": "random",
            "count": 2,
            "ranges": {"table_texture": {"choices": ["wood", "grid"]}},
        },
    },
    {
        "name": "floor",
        "generator": "falling_objects",
        "seed": 5,
        "shard_size": 2,
        "fixed": {"resolution": 64, "n_objects": 3, "n_frames": 2, "start_time": 1.0},
        "sampler": {
            "kind": "random",
            "count": 2,
            "ranges": {"floor_texture": {"choices": ["grid", "plain"]}},
        },
    },
]
# two jobs cannot cover a domain: those tests only warn, integrity stays an ERROR
WARN = {name: {"severity": "WARN"} for name in ("coverage", "bias", "balance", "novelty")}


@pytest.fixture(scope="module")
def two_batches(s3_endpoint, tmp_path_factory) -> str:
    """Both batches planned, rendered and published by one machine; the S3 endpoint."""
    renderer = _storage(tmp_path_factory.mktemp("renderer"), s3_endpoint, PREFIX)
    store = renderer.store
    with dg.instance_for_test() as instance:
        for spec in TWO:
            planned = plan(BatchSpec.model_validate(spec))
            store.save_plan(planned)
            renderer.publish(
                store.spec_path(planned.spec.name), store.manifest_path(planned.spec.name)
            )
            instance.add_dynamic_partitions(batches.name, [planned.spec.name])
            instance.add_dynamic_partitions(shards.name, planned.shards)
            for key in planned.shards:
                assert dg.materialize(
                    [shard], partition_key=key, instance=instance, resources={"storage": renderer}
                ).success
    return s3_endpoint


def _cli(tmp_path, url: str, *args: str) -> subprocess.CompletedProcess:
    """``vario ARGS`` in a fresh process whose data folder is an empty working copy of S3."""
    env = {
        **os.environ,
        "VARIO_DATA_DIR": str(tmp_path / "data"),
        "VARIO_S3_BUCKET": BUCKET,
        "VARIO_S3_PREFIX": PREFIX,
        "VARIO_S3_ENDPOINT_URL": url,
        "VARIO_S3_REGION": "us-east-1",
    }
    command = [sys.executable, "-m", "dagster_project.cli", *args]
    return subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)


def _row(stdout: str, first: str) -> list[str]:
    """The cells after the first of the printed table's row that starts with ``first``."""
    rows = {line.split("│")[1].strip(): line for line in stdout.splitlines() if "│" in line}
    return [c.strip() for c in rows[first].split("│")[2:-1]]


def test_a_missing_bucket_raises_instead_of_looking_empty(tmp_path, s3_endpoint):
    # a GET of a key in a missing bucket answers NoSuchBucket (a HEAD would say only 404)
    nowhere = _storage(tmp_path, s3_endpoint, bucket="no-such-bucket")
    manifest = nowhere.store.manifest_path("desk")
    with pytest.raises(StorageError, match="NoSuchBucket") as raised:
        nowhere.fetch(manifest)
    assert "s3://no-such-bucket/vario/batches/desk/manifest.parquet" in str(raised.value)
    with pytest.raises(StorageError, match="NoSuchBucket"):
        nowhere.fetch_batch("desk")
    spec_file = tmp_path / "desk.yaml"
    spec_file.write_text(yaml.safe_dump(TWO[0]))
    with pytest.raises(StorageError, match="NoSuchBucket"):
        nowhere.submit(spec_file)
    assert not manifest.exists()


def test_access_denied_raises_instead_of_skipping(tmp_path, two_batches, monkeypatch):
    """A user who may list the bucket but not read from it: the listing shows the batch's
    archives, and every download of one is refused with 403; nothing is taken as absent."""
    iam = boto3.client("iam", endpoint_url=two_batches)
    iam.create_user(UserName="lister")
    allow_list = {"Effect": "Allow", "Action": "s3:ListBucket", "Resource": "*"}
    iam.put_user_policy(
        UserName="lister",
        PolicyName="list-only",
        PolicyDocument=json.dumps({"Version": "2012-10-17", "Statement": [allow_list]}),
    )
    key = iam.create_access_key(UserName="lister")["AccessKey"]
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", key["AccessKeyId"])
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", key["SecretAccessKey"])
    lister = _storage(tmp_path, two_batches, PREFIX)
    store = lister.store
    previous = requests.post(f"{two_batches}/moto-api/reset-auth", data=b"0").json()
    try:  # the server checks every request's signature and policy from here on
        assert {n for n in lister.listed(store.archive_dir("desk")) if n.endswith(".zip")}
        with pytest.raises(StorageError, match="AccessDenied") as raised:
            lister.fetch(store.manifest_path("desk"))
        assert "vario-test/two/batches/desk/manifest.parquet" in str(raised.value)
        with pytest.raises(StorageError, match="AccessDenied"):
            lister.fetch_batch("desk")
    finally:
        limit = str(previous["PREVIOUS_INITIAL_NO_AUTH_ACTION_COUNT"]).encode()
        requests.post(f"{two_batches}/moto-api/reset-auth", data=limit)
    assert not store.manifest_path("desk").exists() and not list(tmp_path.rglob("*.zip"))


def test_remote_views_union_the_batches_columns_by_name(tmp_path, two_batches):
    reader = _storage(tmp_path, two_batches, PREFIX)
    con = ds.connect(reader.store, reader.arrow_filesystem())
    rows = con.sql(
        "SELECT batch, count(*), count(param_table_texture), count(param_floor_texture) "
        "FROM jobs GROUP BY batch ORDER BY batch"
    ).fetchall()
    assert rows == [("desk", 2, 2, 0), ("floor", 2, 0, 2)]
    objects = con.sql(
        "SELECT count(DISTINCT job_id) FROM objects WHERE batch = $b", params={"b": "floor"}
    ).fetchall()
    assert objects == [(2,)]
    assert not (tmp_path / "tables").exists()  # read from S3, nothing downloaded
    sql = "SELECT batch, count(param_floor_texture) AS floors FROM jobs GROUP BY 1 ORDER BY 1"
    queried = _cli(tmp_path, two_batches, "query", sql)  # the same views in the sandbox
    assert queried.returncode == 0, queried.stderr
    assert _row(queried.stdout, "desk") == ["0"] and _row(queried.stdout, "floor") == ["2"]


def test_batch_status_reports_from_s3_with_an_empty_working_copy(tmp_path, two_batches):
    status = _cli(tmp_path, two_batches, "batch", "status", "floor")
    assert status.returncode == 0, status.stderr
    assert _row(status.stdout, "all") == ["2", "0", "0"]
    assert _row(status.stdout, "floor~00000") == ["2", "0", "0"]
    assert not (tmp_path / "data" / "archives").exists()  # listed, not downloaded
    unknown = _cli(tmp_path, two_batches, "batch", "status", "nope")
    assert unknown.returncode == 2 and "no batch 'nope' in s3://vario-test/two" in unknown.stderr


def test_dataset_tests_and_export_run_from_empty_working_copies(tmp_path, two_batches):
    tests_file = tmp_path / "warn.tests.yaml"
    tests_file.write_text(yaml.safe_dump(WARN))
    tested = _cli(
        tmp_path / "tester", two_batches, "dataset", "test", "floor", "--tests", str(tests_file)
    )
    assert tested.returncode == 0, tested.stdout + tested.stderr
    # integrity opens the archives and finds every job's: fetched from S3 by the command
    assert _row(tested.stdout, "integrity")[:2] == ["pass", "ERROR"], tested.stdout
    keys = _keys(two_batches)
    assert "two/batches/floor/tests.json" in keys  # recorded where every machine reads it

    exporter = _storage(tmp_path / "exporter", two_batches, PREFIX)
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(batches.name, ["floor"])
        exported = dg.materialize(
            [batch_export],
            partition_key="floor",
            instance=instance,
            resources={"storage": exporter},
        )
    metadata = exported.asset_materializations_for_node("batch_export")[0].metadata
    assert metadata["jobs rows"].value == 2 and metadata["objects rows"].value > 0
    assert "two/exports/floor/jobs.parquet" in _keys(two_batches)

    coco = dg.MultiPartitionKey({"batch": "floor", "format": "coco"})
    with dg.instance_for_test() as instance:  # the training export, from another machine
        instance.add_dynamic_partitions(batches.name, ["floor"])
        assert dg.materialize(
            [dataset_export],
            partition_key=coco,
            instance=instance,
            resources={"storage": _storage(tmp_path / "trainer", two_batches, PREFIX)},
        ).success
    published = {k for k in _keys(two_batches) if k.startswith("two/exports/floor/coco/")}
    assert {"two/exports/floor/coco/export.json", "two/exports/floor/coco/checksums.sha256"} <= (
        published
    )
    assert any(k.endswith(".jpg") or k.endswith(".png") for k in published)


def test_large_objects_go_up_in_parts(tmp_path, s3_endpoint):
    storage = _storage(tmp_path / "a", s3_endpoint, "parts")
    path = storage.path("archives", "big") / "large.zip"
    path.write_bytes(os.urandom(MULTIPART.multipart_threshold + 1024))
    storage.publish(path)
    head = boto3.client("s3", endpoint_url=s3_endpoint).head_object(
        Bucket=BUCKET, Key="parts/archives/big/large.zip"
    )
    assert head["ETag"].strip('"').endswith("-2")  # S3's ETag of an object sent in 2 parts
    other = _storage(tmp_path / "b", s3_endpoint, "parts")
    other.fetch(other.store.root / "archives" / "big" / "large.zip")
    assert (tmp_path / "b" / "archives" / "big" / "large.zip").read_bytes() == path.read_bytes()


def test_the_api_serves_batches_held_on_s3(tmp_path, two_batches):
    """``vario serve`` on a machine with an empty working copy: it lists, follows, pages,
    downloads and exports the batches on S3, queues a spec in the S3 inbox, and a cancel it
    is sent reaches a shard run on another machine."""
    later = _storage(tmp_path / "planner", two_batches, PREFIX)  # recorded, not rendered
    planned = plan(BatchSpec.model_validate({**TWO[0], "name": "later"}))
    later.store.save_plan(planned)
    later.publish(later.store.spec_path("later"), later.store.manifest_path("later"))
    data = tmp_path / "data"
    key = create_key(DataStore(data), "admin")
    env = {
        **os.environ,
        "VARIO_DATA_DIR": str(data),
        "VARIO_S3_BUCKET": BUCKET,
        "VARIO_S3_PREFIX": PREFIX,
        "VARIO_S3_ENDPOINT_URL": two_batches,
        "VARIO_S3_REGION": "us-east-1",
    }
    process, url, log = start_server(env, "--no-daemon")
    s3 = boto3.client("s3", endpoint_url=two_batches)
    try:
        with Client(url, key) as vario:
            listed = vario.request("GET", "/batches").json()["batches"]
            assert [b["name"] for b in listed] == ["desk", "floor", "later"]
            floor = vario.batch("floor")
            assert floor.refresh().counts.done == 2
            assert len(list(floor.jobs(status="done"))) == 2
            summary = floor.download(tmp_path / "downloads", workers=2)
            assert (summary.downloaded, summary.skipped) == (2, 0)
            for path in (tmp_path / "downloads").glob("*.zip"):
                body = s3.get_object(Bucket=BUCKET, Key=f"{PREFIX}/archives/floor/{path.name}")
                assert body["Body"].read() == path.read_bytes()
            exported = floor.export("yolo", tmp_path / "yolo", timeout=300, poll=0.5)
            keys = _keys(two_batches)
            assert all(f"{PREFIX}/exports/{exported['id']}/{f}" in keys for f in exported["files"])
            assert vario.submit({**TWO[1], "name": "next-one"}).refresh().state == "queued"
            assert f"{PREFIX}/inbox/next-one.yaml" in _keys(two_batches)
            assert vario.batch("later").cancel().state == "cancelled"
        assert f"{PREFIX}/batches/later/cancelled" in _keys(two_batches)
    except Exception:
        print(log.read_text()[-3000:], file=sys.stderr)
        raise
    finally:
        stop(process)
    worker = _storage(tmp_path / "worker", two_batches, PREFIX)  # a shard run elsewhere
    with dg.instance_for_test() as instance:
        instance.add_dynamic_partitions(shards.name, planned.shards)
        result = dg.materialize(
            [shard],
            partition_key=planned.shards[0],
            instance=instance,
            resources={"storage": worker},
            raise_on_error=False,
        )
    (failure,) = result.get_step_failure_events()
    assert "was cancelled" in failure.event_specific_data.error.message
    assert not list((tmp_path / "worker").rglob("*.zip"))  # stopped before its first job
