"""What a shard run's pod asks Kubernetes for, as the ``dagster-k8s/config`` run tag that
dagster-k8s's run launcher reads when it builds the run's Job (``infra/helm``).

Every shard run requests ``VARIO_K8S_SHARD_CPUS`` CPUs and runs that many render workers
(a container sees the node's cores, not its share). A GPU shard (Cycles with ``device: gpu``,
see ``BatchSpec.device``) also takes one ``nvidia.com/gpu``, lands on a GPU node (the node
selector from the settings, and the ``nvidia.com/gpu`` taint that GPU node pools carry
tolerated) and runs the CUDA image when ``VARIO_K8S_GPU_IMAGE`` names one. With any other run
launcher the tag is ignored, so it is set on every shard run."""

from __future__ import annotations

import json
from typing import Any, Literal

from generators.settings import Settings, settings

K8S_CONFIG_TAG = "dagster-k8s/config"
GPU_TOLERATION = {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}


def shard_pod_config(device: Literal["cpu", "gpu"], s: Settings | None = None) -> dict[str, Any]:
    """The container and pod configuration of a shard run on ``device``."""
    s = s or settings()
    cpus, memory = str(s.k8s_shard_cpus), s.k8s_shard_memory
    container: dict[str, Any] = {
        "env": [{"name": "VARIO_WORKERS", "value": cpus}],
        "resources": {"requests": {"cpu": cpus, "memory": memory}, "limits": {"memory": memory}},
    }
    if device == "cpu":
        return {"container_config": container}
    container["resources"]["limits"]["nvidia.com/gpu"] = "1"
    if s.k8s_gpu_image:
        container["image"] = s.k8s_gpu_image
    pod = {"node_selector": dict(s.k8s_gpu_node_selector), "tolerations": [GPU_TOLERATION]}
    return {"container_config": container, "pod_spec_config": pod}


def shard_run_tags(device: Literal["cpu", "gpu"]) -> dict[str, str]:
    """The run tag that carries ``shard_pod_config``."""
    return {K8S_CONFIG_TAG: json.dumps(shard_pod_config(device), sort_keys=True)}
