"""The Dagster UI as a user meets it: ``vario ui`` on a project where ``vario demo`` and a
second batch ran, read through the webserver's GraphQL API and in a real browser (Debian's
Chromium driven by Playwright). The browser's screenshots are kept as test artifacts in
``$VARIO_TEST_ARTIFACTS`` (default ``test-artifacts/``), the README's "Tour of the UI" shows
them. A definition that stops loading fails every test here: the location must load."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import httpx
import pytest
import yaml
from browser import browser_page

from dagster_project.definitions import defs
from vario.quality.checks import CHECKS

ARTIFACTS = Path(
    os.environ.get("VARIO_TEST_ARTIFACTS", Path(__file__).resolve().parents[1] / "test-artifacts")
)
SECOND = {  # a second batch, so that two batches' check results must be told apart
    "name": "second",
    "generator": "tabletop",
    "seed": 5,
    "fixed": {"resolution": 64, "n_frames": 1, "n_objects": 3, "n_distractors": 0},
    "sampler": {"kind": "sobol", "count": 8, "ranges": {"light_azimuth": [0, 360]}},
    "shard_size": 8,
}
LOADED = "{ workspaceOrError { ... on Workspace { locationEntries { name loadStatus "
LOADED += "locationOrLoadError { __typename ... on PythonError { message } } } } } }"


def _vario(env: dict, *args: str) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "dagster_project.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]


@pytest.fixture(scope="module")
def project(tmp_path_factory) -> dict:
    """A fresh project (data folder, Dagster home) where the demo and a second batch ran."""
    root = tmp_path_factory.mktemp("ui-project")
    env = {
        **os.environ,
        "VARIO_DATA_DIR": str(root / "data"),
        "DAGSTER_HOME": str(root / "home"),
        "VARIO_CACHE_DIR": str(root / "cache"),
    }
    _vario(env, "demo")
    spec = root / "second.yaml"
    spec.write_text(yaml.safe_dump(SECOND))
    _vario(env, "batch", "run", str(spec), "--workers", "2")
    return env


@dataclass
class UI:
    url: str
    log: Path

    def query(self, text: str, **variables) -> dict:
        reply = httpx.post(
            f"{self.url}/graphql", json={"query": text, "variables": variables}, timeout=60
        )
        reply.raise_for_status()
        body = reply.json()
        assert "errors" not in body, body["errors"]
        return body["data"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _loaded(ui: UI) -> bool:
    try:
        entries = ui.query(LOADED)["workspaceOrError"]["locationEntries"]
    except httpx.HTTPError:
        return False
    for entry in entries:
        error = entry["locationOrLoadError"] or {}
        assert error.get("__typename") != "PythonError", error.get("message")
    return bool(entries) and all(e["loadStatus"] == "LOADED" for e in entries)


@pytest.fixture(scope="module")
def ui(project, tmp_path_factory):
    """``vario ui`` on a free loopback port, until its code location has loaded; stopped
    with Ctrl-C (SIGINT) as a user stops it, its whole process group killed if it lingers."""
    log = tmp_path_factory.mktemp("ui") / "ui.log"
    port = _free_port()
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "dagster_project.cli", "ui", "--port", str(port)],
            env=project,
            stdout=sink,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # its own process group: nothing outlives the test
            preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),
        )
    served = UI(f"http://127.0.0.1:{port}", log)
    try:
        deadline = time.monotonic() + 180
        while not _loaded(served):
            assert process.poll() is None, f"vario ui ended:\n{log.read_text()[-3000:]}"
            assert time.monotonic() < deadline, f"no loaded location:\n{log.read_text()[-3000:]}"
            time.sleep(0.5)
        yield served
    finally:
        os.killpg(process.pid, signal.SIGINT)
        with contextlib.suppress(subprocess.TimeoutExpired):
            process.wait(timeout=30)
        os.killpg(process.pid, signal.SIGKILL) if _group_alive(process.pid) else None
        process.wait(timeout=30)


def _group_alive(group: int) -> bool:
    try:
        os.killpg(group, 0)
    except ProcessLookupError:
        return False
    return True


ASSETS = """{ assetNodes { assetKey { path } description owners { __typename
  ... on TeamAssetOwner { team } } tags { key value }
  assetChecksOrError { ... on AssetChecks { checks { name description blocking } } } } }"""
REPOSITORY = """{ repositoriesOrError { ... on RepositoryConnection { nodes {
  jobs { name description } sensors { name description } schedules { name description } } } } }"""


def test_every_definition_loads_and_is_explained(ui):
    repository = defs.get_repository_def()
    nodes = ui.query(ASSETS)["assetNodes"]
    shown = {"/".join(n["assetKey"]["path"]): n for n in nodes}
    assert set(shown) == {k.to_user_string() for k in repository.asset_graph.get_all_asset_keys()}
    for name, node in shown.items():
        assert node["description"] and "``" not in node["description"], name
        assert {"__typename": "TeamAssetOwner", "team": "vario"} in node["owners"], name
        tags = {t["key"]: t["value"] for t in node["tags"]}
        assert {"domain", "layer"} <= set(tags), name
        for check in node["assetChecksOrError"]["checks"]:
            described = check["description"] or ""
            assert len(described) > len(check["name"]) + 40 and "``" not in described, check
    dataset_checks = {c["name"] for c in shown["batch_dataset"]["assetChecksOrError"]["checks"]}
    assert dataset_checks == set(CHECKS)
    (repo,) = ui.query(REPOSITORY)["repositoriesOrError"]["nodes"]
    definitions = repo["sensors"] + repo["schedules"]
    definitions += [j for j in repo["jobs"] if not j["name"].startswith("__")]
    assert len(definitions) >= 10
    for definition in definitions:
        assert definition["description"] and "``" not in definition["description"], definition


EXECUTIONS = """query($check: String!) { assetCheckExecutions(assetKey: {path: ["batch_dataset"]},
  checkName: $check, limit: 20) { partition status evaluation { partition severity
  description metadataEntries { label __typename ... on FloatMetadataEntry { floatValue }
  ... on IntMetadataEntry { intValue } } } } }"""


def test_each_batchs_dataset_tests_carry_its_partition_and_numbers(ui):
    for check in CHECKS:
        executions = ui.query(EXECUTIONS, check=check)["assetCheckExecutions"]
        assert {e["partition"] for e in executions} == {"demo", "second"}, check
        for execution in executions:
            evaluation = execution["evaluation"]
            assert evaluation["partition"] == execution["partition"]
            assert evaluation["description"], check  # the verdict's message
            numbers = [
                m
                for m in evaluation["metadataEntries"]
                if m["__typename"] in {"FloatMetadataEntry", "IntMetadataEntry"}
            ]
            assert numbers, f"{check} on {execution['partition']} carries no number"


MATERIALIZATIONS = """query($path: [String!]!) { assetOrError(assetKey: {path: $path}) {
  ... on Asset { assetMaterializations(limit: 20) { partition metadataEntries { label
  __typename ... on PathMetadataEntry { path } ... on IntMetadataEntry { intValue }
  ... on TableSchemaMetadataEntry { schema { columns { name type } } } } } } } }"""


def _materializations(ui: UI, asset: str) -> list[dict]:
    found = ui.query(MATERIALIZATIONS, path=[asset])["assetOrError"]["assetMaterializations"]
    return [{m["label"]: m for m in event["metadataEntries"]} | {"": event} for event in found]


def test_shard_and_batch_materializations_show_a_contact_sheet(ui):
    for asset, partitions in (
        ("rendered_shard", {"demo~00000", "demo~00001", "second~00000"}),
        ("batch_dataset", {"demo", "second"}),
    ):
        events = _materializations(ui, asset)
        assert {e[""]["partition"] for e in events} == partitions, asset
        for event in events:
            image = cv2.imread(event["contact sheet"]["path"])
            assert image is not None and image.shape[1] >= 512, (asset, event[""]["partition"])


def test_table_assets_carry_their_column_schema_and_row_count(ui):
    for asset in ("batch_manifest", "shard_labels", "batch_dataset", "batch_export", "dataset"):
        for event in _materializations(ui, asset):
            columns = {c["name"] for c in event["dagster/column_schema"]["schema"]["columns"]}
            assert {"job_id"} <= columns, asset
            assert event["dagster/row_count"]["intValue"] > 0, asset
    (labels, *_) = _materializations(ui, "shard_labels")
    columns = {c["name"]: c["type"] for c in labels["dagster/column_schema"]["schema"]["columns"]}
    assert columns["category"] == "string" and columns["occlusion"] == "float"


def test_ui_log_carries_no_warning(ui):
    time.sleep(5)  # the daemon's first ticks (sensors, run queue, retries) are done by then
    log = ui.log.read_text()
    assert not re.search(r"warn|error|traceback", log, re.IGNORECASE), log
    assert log.startswith("Dagster UI on http://127.0.0.1:")


def _dismiss_newsletter(page) -> None:
    """Dagster's first-visit dialog (a newsletter sign-up) covers the page whenever it comes
    (seconds after the page, on a busy machine): skipped before the next action it blocks."""
    page.add_locator_handler(page.get_by_role("button", name="Skip"), lambda skip: skip.click())


def test_a_user_finds_a_batchs_checks_and_previews_in_the_browser(ui):
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    with browser_page() as page:
        _dismiss_newsletter(page)
        page.goto(
            f"{ui.url}/assets/batch_dataset?view=lineage&lineageScope=neighbors&lineageDepth=3"
        )
        page.get_by_text("rendered_shard", exact=True).first.wait_for(timeout=60_000)
        for name in ("batch_manifest", "shard_labels", "batch_export", "dataset_export"):
            assert page.get_by_text(name, exact=True).count() >= 1, name
        page.screenshot(path=ARTIFACTS / "ui-asset-graph.png")

        page.goto(f"{ui.url}/assets/batch_dataset?view=checks")
        page.get_by_text("balance", exact=True).first.click()
        page.get_by_text("Whether categories and categorical nuisance").wait_for(timeout=60_000)
        page.get_by_text("Execution history").click()
        page.get_by_text("demo", exact=True).first.wait_for(timeout=60_000)
        assert page.get_by_text("second", exact=True).count() >= 1
        page.screenshot(path=ARTIFACTS / "ui-batch-checks.png")

        page.goto(f"{ui.url}/assets/batch_dataset?view=partitions&partition=demo")
        page.get_by_text("dagster/row_count").wait_for(timeout=60_000)
        page.get_by_text("contact sheet", exact=True).first.wait_for(timeout=60_000)
        page.screenshot(path=ARTIFACTS / "ui-batch-partition.png", full_page=True)
