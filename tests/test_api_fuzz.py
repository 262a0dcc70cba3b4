"""Every endpoint fuzzed from the API's own OpenAPI schema (schemathesis, in process over
ASGI, with an admin key): no answer is a server error, every answer, error or not, conforms
to the schema (status, content type, body, headers), and data the schema forbids is refused.

Not checked: that every schema-valid request is accepted. A spec can match the schema and
still not run (an unknown generator, both ``jobs`` and ``sampler``, a parameter out of the
generator's range): those rules are the generator's and the planner's, and their 422 names
the field."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

import pytest
import schemathesis
from conftest import build_batch
from hypothesis import HealthCheck, settings
from schemathesis.specs.openapi.checks import positive_data_acceptance

from vario.api.app import create_app
from vario.api.auth import RateLimiter
from vario.api.keys import create_key
from vario.store.layout import DataStore

SPEC = {
    "name": "fuzz",
    "generator": "tabletop",
    "seed": 2,
    "shard_size": 2,
    "fixed": {"resolution": 48, "n_frames": 1, "n_objects": 1, "n_distractors": 0},
    "sampler": {"kind": "random", "count": 2, "ranges": {"fov": [30, 60]}},
}
FOLDER = Path(tempfile.mkdtemp(prefix="vario-fuzz-"))  # the app is made when collected
APP = create_app(DataStore(FOLDER / SPEC["name"]))
schema = schemathesis.openapi.from_asgi("/openapi.json", APP)
KEY: dict[str, str] = {}


@pytest.fixture(scope="module", autouse=True)
def rendered_batch():
    """The batch the app serves, rendered before the first case; a key; small limits."""
    store = build_batch(FOLDER, SPEC).store
    KEY["admin"] = create_key(store, "admin")
    APP.state.limiter = RateLimiter(1_000_000)
    with pytest.MonkeyPatch.context() as env:
        env.setenv("VARIO_MAX_JOBS", "20")  # a fuzzed spec is planned whole: keep it small
        yield
    shutil.rmtree(FOLDER, ignore_errors=True)


@schema.parametrize()
@settings(
    max_examples=12,
    deadline=None,
    suppress_health_check=list(HealthCheck),
    derandomize=True,  # the same cases on every run: a failure is reproducible
)
def test_every_endpoint_answers_within_its_schema(case):
    case.call_and_validate(
        headers={"Authorization": f"Bearer {KEY['admin']}"},
        excluded_checks=[positive_data_acceptance],
    )
