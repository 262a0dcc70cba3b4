"""The cluster deployment, checked offline: every Kubernetes manifest the project ships is
valid against the Kubernetes schema (strict: an unknown field fails); the Helm values use
only keys of the Dagster chart version they name, with the right types; the Job that
dagster-k8s's own run launcher builds for a GPU shard run and for a CPU shard run, from the
run tags the inbox sensor really sets and the launcher configuration the values give, asks
for what the device needs and is itself valid; the Dockerfiles copy files that exist, run as
a user, serve the project's definitions, and install from exactly the lock they copy."""

from __future__ import annotations

import re
import subprocess
from pathlib import Path
from typing import Any

import dagster as dg
import kubernetes
import kubernetes_validate
import pytest
import yaml
from dagster._core.code_pointer import ModuleCodePointer
from dagster._core.launcher import LaunchRunContext
from dagster._core.origin import JobPythonOrigin, RepositoryPythonOrigin
from dagster._core.test_utils import create_run_for_test
from dagster_k8s import K8sRunLauncher
from dockerfile_parse import DockerfileParser

from dagster_project.kubernetes import GPU_TOLERATION, K8S_CONFIG_TAG
from dagster_project.sensors import batch_run_requests
from generators.settings import Settings
from vario.batch.spec import BatchSpec

ROOT = Path(__file__).resolve().parent.parent
INFRA = ROOT / "infra"
VALUES = yaml.safe_load((INFRA / "helm" / "values.yaml").read_text())
K8S_VERSION = "1.31.0"  # the oldest Kubernetes minor the deployment is meant for
IMAGE = "ghcr.io/example/vario:0.1.0"
GPU_IMAGE = "ghcr.io/example/vario:0.1.0-cuda"


def _valid(resource: dict[str, Any]) -> None:
    kubernetes_validate.validate(resource, K8S_VERSION, strict=True)


@pytest.mark.parametrize("path", sorted((INFRA / "k8s").glob("*.yaml")), ids=lambda p: p.name)
def test_every_shipped_manifest_is_valid_kubernetes(path):
    documents = [d for d in yaml.safe_load_all(path.read_text()) if d]
    assert documents
    for document in documents:
        _valid(document)


def test_strict_validation_rejects_an_unknown_field():
    secret = {"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "x"}, "stringdata": {}}
    with pytest.raises(kubernetes_validate.ValidationError):
        _valid(secret)


# --- the Helm values against the chart's keys ---

CHART_VERSION = "1.13.27"
CHART = yaml.safe_load(
    (Path(__file__).parent / "k8s" / f"dagster-chart-{CHART_VERSION}.yaml").read_text()
)
TYPES = {"str": str, "int": int, "bool": bool, "list": list, "map": dict}


def _mismatches(value: Any, spec: Any, path: str) -> list[str]:
    """Where ``value`` does not fit the chart's ``spec`` for the key at ``path``."""
    if spec == "any":
        return []
    if isinstance(spec, str):
        ok = isinstance(value, TYPES[spec]) and not (spec == "int" and isinstance(value, bool))
        return [] if ok else [f"{path}: {type(value).__name__}, the chart wants {spec}"]
    if "choices" in spec:
        return [] if value in spec["choices"] else [f"{path}: {value!r} not in {spec['choices']}"]
    if "items" in spec:
        if not isinstance(value, list):
            return [f"{path}: {type(value).__name__}, the chart wants a list"]
        return [
            e for i, v in enumerate(value) for e in _mismatches(v, spec["items"], f"{path}[{i}]")
        ]
    if not isinstance(value, dict):
        return [f"{path}: {type(value).__name__}, the chart wants a map"]
    errors = [f"{path}.{key}: required" for key in spec.get("required", []) if key not in value]
    for key, inner in value.items():
        if key in spec["keys"]:
            errors += _mismatches(inner, spec["keys"][key], f"{path}.{key}")
        elif spec["closed"] or not path:  # every top-level key Vario sets must be the chart's
            errors.append(f"{path}.{key}: not a key of the chart")
    return errors


def test_the_values_use_only_the_charts_keys_with_their_types():
    assert _mismatches(VALUES, CHART, "") == []
    # the chart version the values name is the one checked, and the Dagster the lock installs
    named = re.search(r"chart version (\S+) ", (INFRA / "helm" / "values.yaml").read_text())
    assert named.group(1) == CHART_VERSION == dg.__version__


def test_the_key_check_catches_a_misspelt_or_mistyped_key():
    broken = {
        "dagsterDaemon": {
            "runCoordinator": {
                "config": {
                    "queuedRunCoordinator": {
                        "tagConcurrencyLimit": [],  # misspelt: the chart would reject it
                        "maxConcurrentRuns": "64",
                    }
                }
            }
        },
        "runLauncher": {"type": "K8SRunLauncher"},
    }
    assert len(_mismatches(broken, CHART, "")) == 3


def test_the_values_agree_with_the_project():
    (deployment,) = VALUES["dagster-user-deployments"]["deployments"]
    workspace = yaml.safe_load((ROOT / "workspace.yaml").read_text())
    module = workspace["load_from"][0]["python_module"]
    assert deployment["dagsterApiGrpcArgs"] == ["--module-name", module]
    settings_names = {f"VARIO_{name.upper()}" for name in Settings.model_fields}
    env = {e["name"]: e["value"] for e in deployment["env"]}
    assert set(env) <= settings_names
    with pytest.MonkeyPatch.context() as mp:  # the values' settings parse as Vario reads them
        for name, value in env.items():
            mp.setenv(name, value)
        Settings()
    limits = VALUES["dagsterDaemon"]["runCoordinator"]["config"]["queuedRunCoordinator"]
    tags = {(limit["key"], limit["value"]) for limit in limits["tagConcurrencyLimits"]}
    assert tags == {("vario/device", "cpu"), ("vario/device", "gpu")}
    secrets = {s["name"] for s in VALUES["runLauncher"]["config"]["k8sRunLauncher"]["envSecrets"]}
    shipped = yaml.safe_load_all((INFRA / "k8s" / "secrets.example.yaml").read_text())
    shipped_names = {d["metadata"]["name"] for d in shipped}
    assert secrets | {VALUES["global"]["postgresqlSecretName"]} <= shipped_names


# --- the Jobs dagster-k8s launches for shard runs ---


class _BatchApi:
    """Stands in for the Kubernetes API server (unreachable here): keeps what it is sent."""

    def __init__(self):
        self.jobs: list[kubernetes.client.V1Job] = []

    def create_namespaced_job(self, body, namespace, **_):
        self.jobs.append(body)


def _snake(key: str) -> str:
    return re.sub(r"(?<!^)([A-Z])", r"_\1", key).lower()


@pytest.fixture
def launched(tmp_path, monkeypatch):
    """A K8sRunLauncher configured as the chart configures it from the values, whose
    launch of a shard run returns the Job it would create."""
    for name, value in {
        "VARIO_K8S_GPU_IMAGE": GPU_IMAGE,
        "VARIO_K8S_SHARD_CPUS": "6",
        "VARIO_K8S_SHARD_MEMORY": "12Gi",
    }.items():
        monkeypatch.setenv(name, value)
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "current-context": "c",
                "clusters": [{"name": "c", "cluster": {"server": "https://127.0.0.1:1"}}],
                "contexts": [{"name": "c", "context": {"cluster": "c", "user": "u"}}],
                "users": [{"name": "u", "user": {"token": "t"}}],
            }
        )
    )
    origin = JobPythonOrigin(
        "render_shard_job",
        RepositoryPythonOrigin(
            executable_path="/opt/vario/.venv/bin/python",
            code_pointer=ModuleCodePointer("dagster_project.definitions", "defs"),
            container_image=IMAGE,
        ),
    )

    def launcher() -> tuple[K8sRunLauncher, _BatchApi]:
        config = VALUES["runLauncher"]["config"]["k8sRunLauncher"]
        api = _BatchApi()
        return K8sRunLauncher(
            service_account_name="vario-dagster",
            instance_config_map="vario-dagster-instance",
            postgres_password_secret=VALUES["global"]["postgresqlSecretName"],
            dagster_home="/opt/dagster/dagster_home",
            image_pull_policy=config["imagePullPolicy"],
            load_incluster_config=False,
            kubeconfig_file=str(kubeconfig),
            job_namespace="vario",
            env_secrets=[s["name"] for s in config["envSecrets"]],
            fail_pod_on_run_failure=config["failPodOnRunFailure"],
            run_k8s_config={_snake(k): v for k, v in config["runK8sConfig"].items()},
            k8s_client_batch_api=api,
        ), api

    def launch(spec: dict[str, Any]) -> dict[str, Any]:
        run_launcher, api = launcher()
        batch = BatchSpec.model_validate(spec)
        shard_request = batch_run_requests(batch, [f"{batch.name}~00000"])[1]
        with dg.instance_for_test() as instance:
            run_launcher.register_instance(instance)
            run = create_run_for_test(
                instance,
                job_name="render_shard_job",
                tags=shard_request.tags,
                job_code_origin=origin,
            )
            run_launcher.launch_run(LaunchRunContext(dagster_run=run, workspace=None))
        job = kubernetes.client.ApiClient().sanitize_for_serialization(api.jobs[-1])
        _valid(job)
        return job

    return launch


SHARD = {
    "generator": "tabletop",
    "seed": 1,
    "fixed": {"resolution": 64},
    "sampler": {"kind": "random", "count": 4, "ranges": {"fov": [30, 60]}},
}


def _container(job: dict[str, Any]) -> dict[str, Any]:
    (container,) = job["spec"]["template"]["spec"]["containers"]
    return container


def test_a_gpu_shard_runs_on_a_gpu_node_with_one_gpu(launched):
    job = launched(
        {
            **SHARD,
            "name": "on-gpu",
            "renderer": "cycles",
            "fixed": {"resolution": 64, "device": "gpu"},
        }
    )
    pod, container = job["spec"]["template"]["spec"], _container(job)
    assert container["image"] == GPU_IMAGE
    assert container["resources"]["limits"] == {"nvidia.com/gpu": "1", "memory": "12Gi"}
    assert container["resources"]["requests"] == {"cpu": "6", "memory": "12Gi"}
    assert pod["nodeSelector"] == {"nvidia.com/gpu.present": "true"}
    assert pod["tolerations"] == [GPU_TOLERATION]
    env = {e["name"]: e for e in container["env"]}
    assert env["VARIO_WORKERS"]["value"] == "6"
    assert env["DAGSTER_PG_PASSWORD"]["valueFrom"]["secretKeyRef"]["name"] == "vario-postgresql"
    assert {"secretRef": {"name": "vario-s3"}} in container["envFrom"]
    assert job["spec"]["backoffLimit"] == 0 and job["spec"]["ttlSecondsAfterFinished"] == 86400
    assert container["args"][1:5] == ["-m", "dagster", "api", "execute_run"]


def test_a_cpu_shard_asks_for_cpus_only(launched):
    for spec in (
        {**SHARD, "name": "on-cpu"},
        {**SHARD, "name": "cycles-cpu", "renderer": "cycles"},
    ):
        job = launched(spec)
        pod, container = job["spec"]["template"]["spec"], _container(job)
        assert container["image"] == IMAGE
        assert container["resources"] == {
            "limits": {"memory": "12Gi"},
            "requests": {"cpu": "6", "memory": "12Gi"},
        }
        assert "nodeSelector" not in pod and "tolerations" not in pod
        assert {"secretRef": {"name": "vario-s3"}} in container["envFrom"]


def test_shard_runs_carry_their_pod_config_and_queue_tags():
    requests = batch_run_requests(BatchSpec.model_validate({**SHARD, "name": "t"}), ["t~00000"])
    manifest, shard = requests
    assert K8S_CONFIG_TAG not in manifest.tags and "vario/device" not in manifest.tags
    assert (shard.tags["vario/device"], shard.tags["vario/renderer"]) == ("cpu", "tiny")
    assert K8S_CONFIG_TAG in shard.tags


# --- the images ---

DOCKERFILES = sorted((INFRA / "docker").glob("Dockerfile*"))


@pytest.mark.parametrize("path", DOCKERFILES, ids=lambda p: p.name)
def test_the_dockerfile_builds_what_the_project_holds(path, tmp_path):
    with path.open("rb") as handle:
        parsed = DockerfileParser(fileobj=handle)
        structure, base, envs = parsed.structure, parsed.baseimage, parsed.envs
    assert ":" in base and not base.endswith(":latest"), base  # a pinned base
    ignored = set((ROOT / ".dockerignore").read_text().split())
    before_sync: list[tuple[str, str]] = []  # what the dependency layer is built from
    synced = False
    for instruction in structure:
        synced = synced or "uv sync" in instruction["value"]
        if instruction["instruction"] != "COPY":
            continue
        words = instruction["value"].split()
        if words[0].startswith("--from="):
            assert re.search(r":\d+\.\d+\.\d+ ", instruction["value"]), words  # pinned
            continue
        *sources, target = words
        for source in sources:
            assert (ROOT / source).exists(), f"{path.name} copies {source}, which is missing"
            assert source.split("/")[0] not in ignored, f"{source} is in .dockerignore"
            if not synced:
                before_sync.append((source, target))
    users = [i["value"] for i in structure if i["instruction"] == "USER"]
    assert users and users[-1] not in ("root", "0")
    cmd = next(i["value"] for i in reversed(structure) if i["instruction"] == "CMD")
    cmd = yaml.safe_load(cmd)
    assert cmd[:3] == ["dagster", "code-server", "start"] and "dagster_project.definitions" in cmd
    # the dependency layer resolves from exactly the files copied before it, with its flags
    for source, target in before_sync:
        destination = tmp_path / (target if target.endswith("/") else "") / Path(source).name
        destination.parent.mkdir(parents=True, exist_ok=True)
        destination.write_bytes((ROOT / source).read_bytes())
    sync = next(i["value"] for i in structure if "uv sync" in i["value"])
    flags = re.search(r"uv sync ([^&]*)", sync).group(1).split()
    flags = [f for f in flags if not re.fullmatch(r"3\.11\.\d+", f) and f != "--python"]
    result = subprocess.run(
        ["uv", "sync", *flags, "--dry-run", "--offline"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    if "cuda" in path.name:
        assert base.startswith("nvidia/cuda:") and "runtime" in base
        assert "compute" in envs["NVIDIA_DRIVER_CAPABILITIES"]
