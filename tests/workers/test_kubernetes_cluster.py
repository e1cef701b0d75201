"""The pre-flight's read-only cluster checks, through the registered `kubernetes` platform check, against the
Kubernetes API stand-in on 127.0.0.1 reached with a kubeconfig: all OK, a pending claim, no GPU node, a missing
Secret, RBAC refusing a read, and an API server that does not answer (UNKNOWN, never OK)."""

from __future__ import annotations

import asyncio
import os
import socket
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from aiohttp.test_utils import TestServer
from kubernetes_stand_in import KubernetesStandIn, kubeconfig, node

from aoi_pipeline.config import PipelineConfig, config_from_mapping
from aoi_pipeline.pipeline.preflight import HostProbe
from aoi_pipeline.workers.kubernetes import load_base_job_template
from aoi_pipeline.workers.kubernetes_cluster import ClusterTargets, summarize, unknown_checks

SECRET_VALUE = "c2VjcmV0LXZhbHVlLW5ldmVyLXJlYWQ="


def make_config(tmp_path: Path, **kubernetes: Any) -> PipelineConfig:
    settings = {
        "namespace": "aoi",
        "workspace_pvc": "aoi-data",
        "image_pull_secret": "ngc",
        "env_secrets": ["aoi-credentials"],
        "node_selector": {"nvidia.com/gpu.present": "true"},
        **kubernetes,
    }
    data = {"workspace": str(tmp_path / "ws"), "platform": "kubernetes", "kubernetes": settings}
    return config_from_mapping(data)


def ready(stand_in: KubernetesStandIn) -> None:
    stand_in.ready("aoi", "aoi-data", ("ngc", "aoi-credentials"))


def probe(
    tmp_path: Path,
    config: PipelineConfig,
    prepare: Callable[[KubernetesStandIn], None],
    *,
    context: str | None = None,
) -> tuple[tuple[bool | None, str], KubernetesStandIn]:
    """The platform check's answer, asked (from a thread, as the flow asks it) of a stand-in `prepare` set up.

    With `context`, the kubeconfig's current context is a dead server and `context` names the stand-in's.
    """

    async def main() -> tuple[tuple[bool | None, str], KubernetesStandIn]:
        stand_in = KubernetesStandIn()
        prepare(stand_in)
        server = TestServer(stand_in.app, host="127.0.0.1")
        await server.start_server()
        try:
            path = tmp_path / "kubeconfig"
            document = kubeconfig(str(server.make_url("")).rstrip("/"))
            environ = {"KUBECONFIG": str(path), "PATH": os.devnull}
            if context is not None:
                document = with_dead_current_context(document, context)
                environ["TAO_K8S_CONTEXT"] = context
            path.write_text(yaml.safe_dump(document), encoding="utf-8")
            host = HostProbe(environ, config=config, timeout_s=5)
            return await asyncio.to_thread(host.platform_reachable, "kubernetes"), stand_in
        finally:
            await server.close()

    return asyncio.run(main())


def closed_port() -> int:
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        return int(closed.getsockname()[1])


def with_dead_current_context(document: dict[str, Any], context: str) -> dict[str, Any]:
    """The stand-in's context renamed `context`, and a current context whose server does not answer."""
    dead = {"name": "dead", "cluster": {"server": f"http://127.0.0.1:{closed_port()}"}}
    return {
        **document,
        "clusters": [*document["clusters"], dead],
        "contexts": [
            {"name": context, "context": {"cluster": "stand-in", "user": "tester"}},
            {"name": "dead", "context": {"cluster": "dead", "user": "tester"}},
        ],
        "current-context": "dead",
    }


def test_a_ready_cluster_is_ok_with_every_check_named_and_only_reads_were_sent(tmp_path: Path) -> None:
    (ok, seen), stand_in = probe(tmp_path, make_config(tmp_path), ready)

    assert ok is True, seen
    assert seen.split("; ") == [
        "namespace aoi: OK (exists)",
        "PVC aoi-data: OK (Bound to pv-nfs-1)",
        "GPU nodes: OK (1 of 1 nodes matching nvidia.com/gpu.present=true have nvidia.com/gpu >= 1)",
        "image pull Secret ngc: OK (exists)",
        "environment Secret aoi-credentials: OK (exists)",
    ]
    assert {method for method, *_ in stand_in.requests} == {"GET"}
    secret_reads = [path for _, path, _, _ in stand_in.requests if "/secrets/" in path]
    assert secret_reads == ["/api/v1/namespaces/aoi/secrets/ngc", "/api/v1/namespaces/aoi/secrets/aoi-credentials"]
    assert SECRET_VALUE not in seen


def test_secrets_are_read_as_metadata_only(tmp_path: Path) -> None:
    (ok, _), stand_in = probe(tmp_path, make_config(tmp_path), ready)

    secret_reads = [accept for path, accept in stand_in.accepted if "/secrets/" in path]
    assert ok is True and len(secret_reads) == 2
    assert all("as=PartialObjectMetadata" in accept for accept in secret_reads)


def test_a_pending_claim_is_wrong_and_says_what_to_do(tmp_path: Path) -> None:
    def pending(stand_in: KubernetesStandIn) -> None:
        ready(stand_in)
        stand_in.claims[("aoi", "aoi-data")]["status"] = {"phase": "Pending"}

    (ok, seen), _ = probe(tmp_path, make_config(tmp_path), pending)

    assert ok is False
    assert "PVC aoi-data: WRONG (is Pending, not Bound; " in seen
    assert "kubectl -n aoi describe pvc aoi-data" in seen
    assert "namespace aoi: OK" in seen


@pytest.mark.parametrize(
    ("nodes", "gpus_per_job", "expected"),
    [
        ([node("cpu-1", {})], 1, "none with 1 allocatable nvidia.com/gpu (most: 0); add GPU nodes"),
        (
            [node("gpu-1", {"nvidia.com/gpu": "2"}, {"nvidia.com/gpu.present": "true"})],
            4,
            "none with 4 allocatable nvidia.com/gpu (most: 2); add GPU nodes with the NVIDIA device plugin, "
            "or lower gpus_per_job to 2",
        ),
        # A GPU node the job's node selector does not match does not count.
        ([node("gpu-2", {"nvidia.com/gpu": "8"}, {"pool": "other"})], 1, "0 nodes matching"),
    ],
    ids=["no-gpu-node", "too-few-gpus-per-node", "selector-matches-none"],
)
def test_without_a_gpu_node_for_one_job_the_cluster_is_wrong(
    tmp_path: Path, nodes: list[dict[str, Any]], gpus_per_job: int, expected: str
) -> None:
    def without_gpus(stand_in: KubernetesStandIn) -> None:
        ready(stand_in)
        stand_in.nodes = nodes

    config = make_config(tmp_path).model_copy(update={"gpus_per_job": gpus_per_job})
    (ok, seen), stand_in = probe(tmp_path, config, without_gpus)

    assert ok is False
    assert "GPU nodes: WRONG (" in seen and expected in seen
    node_queries = [query for _, path, query, _ in stand_in.requests if path == "/api/v1/nodes"]
    assert node_queries == [{"labelSelector": "nvidia.com/gpu.present=true"}]


def test_cpu_only_runs_do_not_need_gpu_nodes(tmp_path: Path) -> None:
    def no_nodes(stand_in: KubernetesStandIn) -> None:
        ready(stand_in)
        stand_in.nodes = []

    config = make_config(tmp_path).model_copy(update={"gpus": 0})
    (ok, seen), stand_in = probe(tmp_path, config, no_nodes)

    assert ok is True and "GPU nodes: OK (not needed: the run's jobs use no GPU)" in seen
    assert not any(path == "/api/v1/nodes" for _, path, _, _ in stand_in.requests)


def test_a_missing_pull_secret_is_wrong(tmp_path: Path) -> None:
    def without_secret(stand_in: KubernetesStandIn) -> None:
        ready(stand_in)
        del stand_in.secrets[("aoi", "ngc")]

    (ok, seen), _ = probe(tmp_path, make_config(tmp_path), without_secret)

    assert ok is False
    assert "image pull Secret ngc: WRONG (does not exist in namespace aoi; create it in namespace aoi" in seen
    assert "environment Secret aoi-credentials: OK" in seen


def test_a_missing_namespace_is_wrong(tmp_path: Path) -> None:
    def without_namespace(stand_in: KubernetesStandIn) -> None:
        ready(stand_in)
        stand_in.namespaces.clear()

    (ok, seen), _ = probe(tmp_path, make_config(tmp_path), without_namespace)

    assert ok is False and "namespace aoi: WRONG (does not exist; create it (kubectl create namespace aoi)" in seen


def test_what_rbac_does_not_show_is_unknown_not_ok_and_not_wrong(tmp_path: Path) -> None:
    def namespace_scoped_user(stand_in: KubernetesStandIn) -> None:
        ready(stand_in)
        stand_in.forbidden = {"nodes", "namespaces"}

    (ok, seen), _ = probe(tmp_path, make_config(tmp_path), namespace_scoped_user)

    assert ok is None
    assert "namespace aoi: UNKNOWN (not readable here: the API server answered 403 Forbidden)" in seen
    assert "GPU nodes: UNKNOWN (nodes are not readable here" in seen
    assert "PVC aoi-data: OK" in seen


def test_an_api_server_that_does_not_answer_leaves_every_check_unknown(tmp_path: Path) -> None:
    port = closed_port()
    path = tmp_path / "kubeconfig"
    path.write_text(yaml.safe_dump(kubeconfig(f"http://127.0.0.1:{port}")), encoding="utf-8")
    host = HostProbe({"KUBECONFIG": str(path)}, config=make_config(tmp_path), timeout_s=5)

    ok, seen = host.platform_reachable("kubernetes")

    assert ok is None
    checks = seen.split("; ")
    assert len(checks) == 5 and all(": UNKNOWN (the API server did not answer" in check for check in checks)


def test_without_a_kubeconfig_or_a_pod_the_cluster_is_not_asked(tmp_path: Path) -> None:
    host = HostProbe({"HOME": str(tmp_path)}, config=make_config(tmp_path))

    ok, seen = host.platform_reachable("kubernetes")

    assert ok is None and "no kubeconfig (KUBECONFIG, ~/.kube/config) and not inside a pod" in seen


def test_the_targets_default_to_the_templates_namespace_claim_and_no_secrets(tmp_path: Path) -> None:
    config = config_from_mapping({"workspace": str(tmp_path / "ws"), "platform": "kubernetes"})

    targets = ClusterTargets.from_config(config, load_base_job_template())

    assert targets.namespace == "default"
    assert targets.volume == {"name": "workspace", "persistentVolumeClaim": {"claimName": "aoi-workspace"}}
    assert targets.pull_secrets == () and targets.env_secrets == () and targets.gpus_per_job == 1
    assert summarize(unknown_checks(targets, "x"))[0] is None


def test_a_volume_other_than_a_claim_is_unknown(tmp_path: Path) -> None:
    config = make_config(tmp_path, workspace_pvc=None, workspace_volume={"nfs": {"server": "nas", "path": "/aoi"}})

    (ok, seen), _ = probe(tmp_path, config, ready)

    assert ok is None and "workspace volume: UNKNOWN (a nfs volume, not a PersistentVolumeClaim: not checked)" in seen


def test_tao_k8s_context_picks_the_kubeconfig_context_to_ask(tmp_path: Path) -> None:
    (ok, seen), stand_in = probe(tmp_path, make_config(tmp_path), ready, context="aoi-cluster")

    assert ok is True, seen
    assert stand_in.requests  # the named context's server was asked, not the dead current one
