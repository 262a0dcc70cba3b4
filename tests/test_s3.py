"""S3 storage through dagster-aws, against a real S3-compatible server on loopback (moto's):
specs through the S3 inbox, archives and tables published, the dataset read from S3, and a
shard resumed on a machine with an empty working copy."""

from __future__ import annotations

import socket

import boto3
import dagster as dg
import pytest
import yaml
from moto.server import ThreadedMotoServer

from assets_defs.batches import batch_manifest, dataset, shard
from assets_defs.quality import DatasetTestsResource, batch_dataset, batch_export
from assets_defs.storage import StorageResource
from dagster_project.local_run import evaluate_sensor
from dagster_project.sensors import inbox_sensor
from vario.store import views as ds

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
        for name, value in {
            "AWS_ACCESS_KEY_ID": "test",
            "AWS_SECRET_ACCESS_KEY": "test",
            "AWS_DEFAULT_REGION": "us-east-1",
        }.items():
            mp.setenv(name, value)
        url = f"http://127.0.0.1:{port}"
        boto3.client("s3", endpoint_url=url).create_bucket(Bucket=BUCKET)
        yield url
    server.stop()


def _storage(root, url) -> StorageResource:
    return StorageResource(
        root=str(root), s3_bucket=BUCKET, s3_endpoint_url=url, s3_region="us-east-1"
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
        for key in shards:
            assert dg.materialize(
                [shard], partition_key=key, instance=instance, resources={"storage": here}
            ).success
        keys = _keys(s3_endpoint)
        assert "vario/inbox/clouds.yaml" not in keys  # taken from the S3 inbox
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
