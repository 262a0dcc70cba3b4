"""The HTTP API, served for real: ``vario serve`` (uvicorn) in a subprocess on a free loopback
port, over a rendered batch; requests through httpx and the project's own client."""

from __future__ import annotations

import hashlib
import io
import json
import os
import socket
import subprocess
import sys
import time
import zipfile
from pathlib import Path

import httpx
import pyarrow as pa
import pytest
import yaml
from conftest import build_batch
from vario_client import ApiError, Client, Forbidden, InvalidRequest, NotFound, Unauthorized

from vario.api.keys import create_key, keys_path
from vario.quality import checks as quality
from vario.run import shard as sh

SPEC = {
    "name": "api",
    "generator": "tabletop",
    "seed": 5,
    "shard_size": 2,
    "fixed": {"resolution": 64, "n_frames": 2, "n_objects": 2, "n_distractors": 0},
    "sampler": {"kind": "random", "count": 3, "ranges": {"fov": [30, 60]}},
}
YAML = {"Content-Type": "application/yaml"}
LENIENT = {name: {"severity": "WARN"} for name in ("coverage", "bias", "balance", "novelty")}


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start_server(
    env: dict, *extra: str, cwd: Path | None = None, new_session: bool = False
) -> tuple[subprocess.Popen, str, Path]:
    """``vario serve`` on a free port, once it answers; its output goes to a log file."""
    port = free_port()
    log = Path(env["VARIO_DATA_DIR"]).parent / f"serve-{port}.log"
    command = [sys.executable, "-m", "dagster_project.cli", "serve", "--port", str(port), *extra]
    with log.open("wb") as out:
        process = subprocess.Popen(
            command,
            env=env,
            cwd=cwd,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=new_session,
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        assert process.poll() is None, log.read_text()
        try:
            if httpx.get(f"{url}/openapi.json", timeout=2).status_code == 200:
                return process, url, log
        except httpx.TransportError:
            time.sleep(0.3)
    process.kill()
    raise AssertionError(f"the server did not start:\n{log.read_text()[-3000:]}")


def stop(process: subprocess.Popen) -> None:
    process.terminate()
    try:
        process.wait(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    """A rendered and tested 3-job batch, three keys (read, submit, admin) and the server."""
    storage = build_batch(tmp_path_factory.mktemp("api"), SPEC)
    store = storage.store
    tests = quality.DatasetTests.model_validate(LENIENT)
    quality.record_results(store, "api", quality.run_checks(store, "api", tests))
    keys = {scope: create_key(store, scope) for scope in ("read", "submit", "admin")}
    env = {**os.environ, "VARIO_DATA_DIR": str(store.root), "VARIO_API_RATE_PER_MINUTE": "100000"}
    process, url, log = start_server(env, "--no-daemon")
    yield url, keys, store
    stop(process)


def _get(url: str, key: str | None, path: str, **kwargs) -> httpx.Response:
    headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {key}"} if key else {})}
    return httpx.get(f"{url}/v1{path}", headers=headers, timeout=30, **kwargs)


def _post(url: str, key: str | None, path: str, **kwargs) -> httpx.Response:
    headers = {**kwargs.pop("headers", {}), **({"Authorization": f"Bearer {key}"} if key else {})}
    return httpx.post(f"{url}/v1{path}", headers=headers, timeout=60, **kwargs)


def _problem(response: httpx.Response, status: int) -> dict:
    assert response.status_code == status, response.text
    assert response.headers["content-type"] == "application/problem+json"
    problem = response.json()
    assert problem["status"] == status and problem["title"]
    return problem


def _inbox(store) -> list[str]:
    return sorted(p.name for p in store.inbox.iterdir()) if store.inbox.exists() else []


# --- keys and scopes ----------------------------------------------------------------------


def test_keys_are_stored_only_as_salted_hashes(served):
    _, keys, store = served
    stored = keys_path(store).read_text()
    for key in keys.values():
        secret = key.split("_", 2)[2]  # vario_<id>_<secret>: the secret may hold "_" too
        assert secret not in stored and key not in stored
    assert oct(keys_path(store).stat().st_mode & 0o777) == "0o600"


def test_no_key_or_a_wrong_one_is_401_a_small_scope_403(served):
    url, keys, store = served
    problem = _problem(_get(url, None, "/generators"), 401)
    assert "API key" in problem["detail"]
    assert _get(url, None, "/generators").headers["www-authenticate"] == "Bearer"
    wrong = keys["admin"][:-4] + "AAAA"
    _problem(_get(url, wrong, "/generators"), 401)
    _problem(_get(url, "not-a-key", "/generators"), 401)
    before = _inbox(store)
    spec = {**SPEC, "name": "by-reader"}
    problem = _problem(_post(url, keys["read"], "/batches", json=spec), 403)
    assert "'read'" in problem["detail"] and "'submit'" in problem["detail"]
    assert _inbox(store) == before  # nothing queued


# --- generators ---------------------------------------------------------------------------


def test_generators_their_parameters_validation_and_random_parameters(served):
    url, keys, _ = served
    with Client(url, keys["read"]) as vario:
        assert {"tabletop", "falling_objects"} <= {g.name for g in vario.generators()}
        detail = vario.parameters("tabletop")
        fov = detail.parameters["properties"]["fov"]
        assert (fov["minimum"], fov["maximum"], fov["default"]) == (20, 90, 45.0)
        assert "fov" in detail.nuisance and "n_objects" in detail.semantic
        with pytest.raises(InvalidRequest) as bad:
            vario.validate("tabletop", {"fov": 500, "bogus": 1})
        fields = {e["field"] for e in bad.value.errors}
        assert {"fov", "bogus"} <= fields
        assert vario.validate("tabletop", {"fov": 50})["fov"] == 50
        drawn = vario.random_params("tabletop", seed=11)
        assert drawn == vario.random_params("tabletop", seed=11)  # the same seed, the same
        assert drawn != vario.random_params("tabletop", seed=12)
        assert {**vario.validate("tabletop", drawn), **drawn} == vario.validate("tabletop", drawn)
        assert "renderer" not in drawn  # a job of a batch spec as it is
        with pytest.raises(NotFound):
            vario.parameters("nope")


# --- batches ------------------------------------------------------------------------------


def test_a_batch_its_progress_tests_jobs_and_report(served):
    url, keys, _ = served
    status = _get(url, keys["read"], "/batches/api").json()
    assert status["state"] == "done" and status["jobs"] == 3 and status["progress"] == 1.0
    assert status["counts"] == {"done": 3, "failed": 0, "pending": 0}
    assert {t["name"] for t in status["tests"]} >= {"coverage", "balance"}
    first = _get(url, keys["read"], "/batches/api/jobs", params={"limit": 2}).json()
    assert [j["job_index"] for j in first["jobs"]] == [0, 1] and first["next_cursor"] == 1
    rest = _get(url, keys["read"], "/batches/api/jobs", params={"cursor": 1}).json()
    assert [j["job_index"] for j in rest["jobs"]] == [2] and rest["next_cursor"] is None
    failed = _get(url, keys["read"], "/batches/api/jobs", params={"status": "failed"}).json()
    assert failed["jobs"] == []
    listed = _get(url, keys["read"], "/batches").json()
    assert listed == {
        "batches": [{"name": "api", "generator": "tabletop", "jobs": 3}],
        "next_cursor": None,
    }
    report = _get(url, keys["read"], "/batches/api/report")
    assert report.status_code == 200 and "<html" in report.text.lower()
    _problem(_get(url, keys["read"], "/batches/nope"), 404)


def test_a_submitted_spec_is_validated_queued_once_and_idempotent(served):
    url, keys, store = served
    spec = {**SPEC, "name": "queued", "seed": 9}
    headers = {"Idempotency-Key": "abc-1"}
    first = _post(url, keys["submit"], "/batches", json=spec, headers=headers)
    assert first.status_code == 202, first.text
    assert first.json() == {"name": "queued", "jobs": 3, "shards": 2, "state": "queued"}
    assert first.headers["location"] == "/v1/batches/queued"
    assert "queued.yaml" in _inbox(store)
    again = _post(url, keys["submit"], "/batches", json=spec, headers=headers)
    assert (again.status_code, again.json()) == (202, first.json())
    other = _post(url, keys["submit"], "/batches", json={**spec, "seed": 10}, headers=headers)
    assert "Idempotency-Key" in _problem(other, 422)["detail"]
    assert _get(url, keys["read"], "/batches/queued").json()["state"] == "queued"
    # YAML works too; the same spec as a recorded batch queues nothing
    recorded = json.loads((store.batch_dir("api") / "spec.json").read_text())
    body = yaml.safe_dump(recorded).encode()
    before = _inbox(store)
    same = _post(
        url, keys["submit"], "/batches", content=body, headers={"Content-Type": "application/yaml"}
    )
    assert (same.status_code, same.json()["state"]) == (200, "recorded")
    assert _inbox(store) == before


def test_bad_specs_get_their_exact_status_and_leave_nothing(served):
    url, keys, store = served
    before = _inbox(store)
    submit = keys["submit"]
    bad = _post(url, submit, "/batches", json={**SPEC, "name": "bad", "fixed": {"n_objects": 500}})
    problem = _problem(bad, 422)
    assert any("n_objects" in e["field"] for e in problem["errors"]), problem
    missing = _problem(_post(url, submit, "/batches", json={"name": "x"}), 422)
    assert {e["field"] for e in missing["errors"]} >= {"generator"}
    bomb = b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    problem = _problem(
        _post(url, submit, "/batches", content=bomb, headers={"Content-Type": "application/yaml"}),
        422,
    )
    assert "aliases" in json.dumps(problem)
    huge = b"name: x\n" + b"#" * 2_000_000
    _problem(
        _post(url, submit, "/batches", content=huge, headers={"Content-Type": "application/yaml"}),
        413,
    )
    taken = {**SPEC, "seed": 99}  # the name "api" is recorded with another spec
    assert "another spec" in _problem(_post(url, submit, "/batches", json=taken), 409)["detail"]
    odd = _post(url, submit, "/batches", content=b"<xml/>", headers={"Content-Type": "text/xml"})
    _problem(odd, 415)
    many = {**SPEC, "name": "many", "sampler": {**SPEC["sampler"], "count": 10**9}}
    _problem(_post(url, submit, "/batches", json=many), 422)  # bounded before any planning
    assert _inbox(store) == before


@pytest.mark.parametrize(
    "path",
    ["/jobs/..%2F..%2Fetc%2Fpasswd", "/batches/%2e%2e", "/jobs/a%00b", "/batches/x%2Fy/jobs"],
)
def test_ids_are_checked_against_one_pattern(served, path):
    url, keys, _ = served
    response = _get(url, keys["read"], path)
    assert response.status_code in (404, 422), response.text
    assert response.headers["content-type"] == "application/problem+json"


# --- jobs and archives --------------------------------------------------------------------


def test_a_job_its_archive_ranges_etag_and_preview(served):
    url, keys, store = served
    job_id = _get(url, keys["read"], "/batches/api/jobs").json()["jobs"][0]["job_id"]
    job = _get(url, keys["read"], f"/jobs/{job_id}").json()
    assert job["batch"] == "api" and job["status"] == "done" and job["params"]["fov"] >= 30
    assert job["timing"]["total_seconds"] > 0
    path = sh.archive_path(store.archive_dir("api"), job_id)
    data = path.read_bytes()
    digest = hashlib.sha256(data).hexdigest()
    assert (job["archive_sha256"], job["archive_bytes"]) == (digest, len(data))
    whole = _get(url, keys["read"], f"/jobs/{job_id}/archive")
    assert whole.content == data and whole.headers["etag"] == f'"{digest}"'
    assert int(whole.headers["content-length"]) == len(data)
    assert zipfile.ZipFile(io.BytesIO(whole.content)).testzip() is None
    part = _get(url, keys["read"], f"/jobs/{job_id}/archive", headers={"Range": "bytes=100-"})
    assert part.status_code == 206 and part.content == data[100:]
    same = _get(
        url, keys["read"], f"/jobs/{job_id}/archive", headers={"If-None-Match": f'"{digest}"'}
    )
    assert same.status_code == 304 and same.content == b""
    preview = _get(url, keys["read"], f"/jobs/{job_id}/preview.png")
    assert preview.headers["content-type"] == "image/png" and preview.content[:4] == b"\x89PNG"
    _problem(_get(url, keys["read"], "/jobs/0123456789abcdef"), 404)


def test_queries_as_json_and_arrow_within_the_sandbox(served):
    url, keys, _ = served
    with Client(url, keys["read"]) as vario:
        result = vario.query("SELECT job_id, count(*) AS n FROM frames GROUP BY 1 ORDER BY 1")
        assert result.columns == ["job_id", "n"] and [r[1] for r in result.rows] == [2, 2, 2]
        assert vario.query("SELECT * FROM objects", max_rows=1).truncated
    body = {"sql": "SELECT count(*) AS n FROM objects", "format": "arrow"}
    arrow = _post(url, keys["read"], "/query", json=body)
    table = pa.ipc.open_stream(arrow.content).read_all()
    assert table.column_names == ["n"] and table["n"][0].as_py() > 0
    for sql in ("DROP TABLE frames", "SELECT * FROM read_csv('/etc/passwd')", "SELECT nope"):
        _problem(_post(url, keys["read"], "/query", json={"sql": sql}), 422)


# --- the client's downloads ---------------------------------------------------------------


def test_the_client_downloads_every_archive_once_and_resumes_a_cut_one(served, tmp_path):
    url, keys, store = served
    with Client(url, keys["read"]) as vario:
        batch = vario.batch("api")
        assert batch.refresh().state == "done"
        first = batch.download(tmp_path, workers=3)
        assert (first.downloaded, first.skipped) == (3, 0)
        archives = sorted(store.archive_dir("api").glob("*.zip"))
        assert sorted(p.name for p in tmp_path.iterdir()) == [p.name for p in archives]
        for archive in archives:
            assert (tmp_path / archive.name).read_bytes() == archive.read_bytes()
        second = batch.download(tmp_path)
        assert (second.downloaded, second.skipped, second.bytes) == (0, 3, 0)  # nothing sent
        cut = tmp_path / archives[0].name  # as an interrupted download leaves it
        data = cut.read_bytes()
        cut.unlink()
        (tmp_path / f"{cut.name}.part").write_bytes(data[:1000])
        (tmp_path / f"{cut.name}.etag").write_text(f'"{hashlib.sha256(data).hexdigest()}"')
        third = batch.download(tmp_path)
        assert (third.downloaded, third.skipped, third.bytes) == (1, 2, len(data) - 1000)
        cut.rename(tmp_path / f"{cut.name}.part")  # whole but never renamed: Range is past it
        (tmp_path / f"{cut.name}.etag").write_text(f'"{hashlib.sha256(data).hexdigest()}"')
        fourth = batch.download(tmp_path)
        assert (fourth.downloaded, fourth.bytes) == (1, len(data))
        assert cut.read_bytes() == data and sorted(tmp_path.iterdir()) == sorted(
            tmp_path / p.name for p in archives
        )


def test_the_client_raises_typed_errors(served):
    url, keys, _ = served
    with Client(url, "vario_000000000000_" + "A" * 43) as stranger, pytest.raises(Unauthorized):
        stranger.generators()
    with Client(url, keys["read"]) as reader, pytest.raises(Forbidden):
        reader.submit({**SPEC, "name": "nope"})


def test_each_key_has_its_own_rate_limit(tmp_path, monkeypatch):
    from fastapi.testclient import TestClient

    from vario.api.app import create_app
    from vario.store.layout import DataStore

    monkeypatch.setenv("VARIO_API_RATE_PER_MINUTE", "3")
    store = DataStore(tmp_path)
    first, second = create_key(store, "read"), create_key(store, "read")
    with TestClient(create_app(store)) as client:

        def get(key: str) -> httpx.Response:
            return client.get("/v1/generators", headers={"Authorization": f"Bearer {key}"})

        assert [get(first).status_code for _ in range(3)] == [200, 200, 200]
        limited = get(first)
        assert limited.status_code == 429 and 1 <= int(limited.headers["retry-after"]) <= 20
        assert limited.headers["content-type"] == "application/problem+json"
        assert get(second).status_code == 200  # another key's budget is its own


def test_cancel_stops_a_batch_before_its_next_job_and_a_queued_spec_leaves_the_inbox(tmp_path):
    import dagster as dg
    from fastapi.testclient import TestClient

    from assets_defs.batches import shard
    from assets_defs.storage import StorageResource
    from dagster_project.local_run import evaluate_sensor
    from dagster_project.sensors import inbox_sensor
    from vario.api.app import create_app

    storage = StorageResource(root=str(tmp_path / "data"))
    store = storage.store
    store.inbox.mkdir(parents=True)
    (store.inbox / "stopped.yaml").write_text(yaml.safe_dump({**SPEC, "name": "stopped"}))
    key = {"Authorization": f"Bearer {create_key(store, 'submit')}"}
    with TestClient(create_app(store)) as api, dg.instance_for_test() as instance:
        queued = {**SPEC, "name": "waiting"}
        assert api.post("/v1/batches", json=queued, headers=key).status_code == 202
        gone = api.post("/v1/batches/waiting/cancel", headers=key)
        assert gone.json()["state"] == "cancelled" and not (store.inbox / "waiting.yaml").exists()
        assert api.post("/v1/batches/waiting/cancel", headers=key).status_code == 404
        requests = evaluate_sensor(inbox_sensor, instance, storage).run_requests
        shards = [r.partition_key for r in requests if r.job_name == "render_shard_job"]
        assert (
            len(shards) == 2
            and api.get("/v1/batches/stopped", headers=key).json()["state"] == "pending"
        )
        stopped = api.post("/v1/batches/stopped/cancel", headers=key)
        assert (stopped.status_code, stopped.json()["state"]) == (202, "cancelled")
        assert api.post("/v1/batches/stopped/cancel", headers=key).json()["state"] == "cancelled"
        result = dg.materialize(  # a shard run queued before the cancel starts after it
            [shard],
            partition_key=shards[0],
            instance=instance,
            resources={"storage": storage},
            raise_on_error=False,
        )
        assert not result.success
        failure = next(e for e in result.all_events if e.is_step_failure)
        assert "was cancelled" in str(failure.event_specific_data.error)
        assert not list(store.archive_dir("stopped").glob("*.zip"))  # nothing more rendered
        counts = api.get("/v1/batches/stopped", headers=key).json()["counts"]
        assert counts == {"done": 0, "failed": 0, "pending": 3}


def test_an_export_made_on_the_server_loads_in_pycocotools(served, tmp_path):
    from pycocotools.coco import COCO

    url, keys, _ = served
    with Client(url, keys["submit"]) as vario:
        batch = vario.batch("api")
        status = batch.export("coco", tmp_path / "coco", split="train=1", timeout=300)
        again = _post(
            url, keys["submit"], "/batches/api/exports", json={"format": "coco", "split": "train=1"}
        )
        assert again.json()["id"] == status["id"] and again.json()["state"] == "done"  # once
        assert status["summary"]["frames"] == {"train": 6}
        coco = COCO(str(tmp_path / "coco" / "annotations" / "instances_train.json"))
        assert len(coco.imgs) == 6 and all(
            (tmp_path / "coco" / "images" / "train" / i["file_name"]).exists()
            for i in coco.imgs.values()
        )
        with pytest.raises(ApiError, match="failed: .*nope"):
            batch.export("coco", tmp_path / "bad", where="nope > 1", timeout=300)
    escape = _get(url, keys["read"], f"/exports/{status['id']}/files/%2e%2e/%2e%2e/api/keys.json")
    assert escape.status_code == 404
