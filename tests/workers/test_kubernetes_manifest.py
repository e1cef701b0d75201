"""Every Job manifest our Kubernetes base job template renders is valid against the official schemas.

Rendering goes through the prefect-kubernetes worker's own code (`render_job_manifest`); validation through
kubernetes-validate's bundled schemas with strict checks (unknown fields are errors) for a pinned Kubernetes
version, offline. The worker itself demands `parallelism` and `completions` inside the pod spec (its
`_get_base_job_manifest`), which are Job fields, not PodSpec fields: the API server drops them with a warning,
so validation removes exactly those two and a test pins that they are the only fields strict validation rejects.
"""

from __future__ import annotations

import copy
import json
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from aoi_pipeline.config import config_from_mapping
from aoi_pipeline.errors import ConfigError
from aoi_pipeline.jobs.job import TaoJob
from aoi_pipeline.workers.kubernetes import (
    JOB_LABEL,
    find_base_job_template,
    job_variables,
    load_base_job_template,
    render_job_manifest,
)

KUBERNETES_VERSION = "1.32.0"
WORKER_POD_FIELDS = ("parallelism", "completions")
DNS_PREFIX = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?-")


def config_for(tmp_path: Path, **kubernetes: Any):
    data: dict[str, Any] = {"workspace": str(tmp_path / "ws")}
    if kubernetes:
        data["kubernetes"] = kubernetes
    return config_from_mapping(data)


def tao_job(config, *, gpus: int = 1, name: str = "run_20260101_000000.phase1.trial_003.train") -> TaoJob:
    return TaoJob(
        name=name,
        action="train",
        image=config.images.train,
        spec={"train": {"num_epochs": 2}},
        results_dir=config.resolved_results_root / "trial_003",
        gpus=gpus,
        env_names=("NGC_API_KEY",),
    )


def without_worker_pod_fields(manifest: dict[str, Any]) -> dict[str, Any]:
    manifest = copy.deepcopy(manifest)
    pod_spec = manifest["spec"]["template"]["spec"]
    for field in WORKER_POD_FIELDS:
        assert pod_spec.pop(field) == 1
    return manifest


def validate_strict(manifest: dict[str, Any]) -> None:
    kubernetes_validate.validate(without_worker_pod_fields(manifest), KUBERNETES_VERSION, strict=True)


def pod_spec(manifest: dict[str, Any]) -> dict[str, Any]:
    return manifest["spec"]["template"]["spec"]


def container(manifest: dict[str, Any]) -> dict[str, Any]:
    return pod_spec(manifest)["containers"][0]


CASES: dict[str, tuple[dict[str, Any], int]] = {
    "defaults, one GPU": ({}, 1),
    "defaults, no GPU": ({}, 0),
    "four GPUs on a named PVC": ({"workspace_pvc": "team-aoi"}, 4),
    "workspace on NFS, no PVC": ({"workspace_volume": {"nfs": {"server": "nfs.local", "path": "/aoi"}}}, 1),
    "workspace on a host path, no PVC, no GPU": (
        {"workspace_volume": {"hostPath": {"path": "/data/aoi", "type": "Directory"}}},
        0,
    ),
    "GPU node selector and tolerations": (
        {
            "node_selector": {"nvidia.com/gpu.product": "NVIDIA-H100-80GB-HBM3"},
            "tolerations": [{"key": "dedicated", "operator": "Equal", "value": "gpu", "effect": "NoExecute"}],
        },
        2,
    ),
    "namespace, service account, pull secret, env secrets, shm": (
        {
            "namespace": "aoi",
            "service_account": "aoi-runner",
            "image_pull_secret": "ngc-registry",
            "env_secrets": ["aoi-credentials", "hf-token"],
            "shm_size": "32Gi",
        },
        1,
    ),
}


@pytest.mark.parametrize("case", list(CASES))
def test_every_rendered_manifest_passes_strict_schema_validation(tmp_path: Path, case: str) -> None:
    kubernetes, gpus = CASES[case]
    config = config_for(tmp_path, **kubernetes)
    manifest = render_job_manifest(tao_job(config, gpus=gpus), config)
    validate_strict(manifest)
    assert DNS_PREFIX.fullmatch(manifest["metadata"]["generateName"])


def test_a_config_naming_only_the_workspace_gets_the_documented_defaults(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    manifest = render_job_manifest(tao_job(config, gpus=1), config)
    spec = pod_spec(manifest)
    assert manifest["metadata"]["namespace"] == "default"
    assert manifest["spec"]["backoffLimit"] == 0
    assert spec["restartPolicy"] == "Never"
    assert spec["volumes"] == [
        {"name": "workspace", "persistentVolumeClaim": {"claimName": "aoi-workspace"}},
        {"name": "dshm", "emptyDir": {"medium": "Memory", "sizeLimit": "16Gi"}},
    ]
    # Specs name host paths under the workspace, so the volume is mounted at exactly that path.
    assert container(manifest)["volumeMounts"] == [
        {"name": "workspace", "mountPath": str(tmp_path / "ws")},
        {"name": "dshm", "mountPath": "/dev/shm"},
    ]
    assert container(manifest)["resources"]["limits"] == {"nvidia.com/gpu": 1}
    assert container(manifest)["image"] == config.images.train
    assert spec["tolerations"] == [{"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}]
    assert spec["imagePullSecrets"] == []
    assert "serviceAccountName" not in spec
    assert manifest["metadata"]["labels"][JOB_LABEL] == "run_20260101_000000.phase1.trial_003.train"
    assert container(manifest)["args"] == ["prefect", "flow-run", "execute"]


def test_a_job_without_gpus_requests_none_and_stays_off_gpu_nodes(tmp_path: Path) -> None:
    config = config_for(tmp_path, node_selector={"gpu": "yes"}, tolerations=[{"key": "gpu", "operator": "Exists"}])
    manifest = render_job_manifest(tao_job(config, gpus=0), config)
    assert "nvidia.com/gpu" not in container(manifest)["resources"].get("limits", {})
    assert pod_spec(manifest)["nodeSelector"] == {}
    assert pod_spec(manifest)["tolerations"] == []
    gpu_manifest = render_job_manifest(tao_job(config, gpus=2), config)
    assert pod_spec(gpu_manifest)["nodeSelector"] == {"gpu": "yes"}
    assert pod_spec(gpu_manifest)["tolerations"] == [{"key": "gpu", "operator": "Exists"}]
    assert container(gpu_manifest)["resources"]["limits"]["nvidia.com/gpu"] == 2


def test_settings_reach_the_manifest_by_name_only(tmp_path: Path) -> None:
    config = config_for(
        tmp_path, namespace="aoi", service_account="runner", image_pull_secret="ngc-registry", env_secrets=["creds"]
    )
    manifest = render_job_manifest(tao_job(config), config)
    assert manifest["metadata"]["namespace"] == "aoi"
    assert pod_spec(manifest)["serviceAccountName"] == "runner"
    assert pod_spec(manifest)["imagePullSecrets"] == [{"name": "ngc-registry"}]
    assert container(manifest)["envFrom"] == [{"secretRef": {"name": "creds"}}]


def test_prefect_credentials_of_the_worker_are_never_shown(tmp_path: Path) -> None:
    from prefect.settings import PREFECT_API_KEY, temporary_settings

    config = config_for(tmp_path)
    with temporary_settings(updates={PREFECT_API_KEY: "pnu_not-a-real-key-0123456789"}):
        manifest = render_job_manifest(tao_job(config), config)
    env = {entry["name"]: entry.get("value") for entry in container(manifest)["env"]}
    assert env["PREFECT_API_KEY"] == "<redacted>"
    assert "pnu_not-a-real-key" not in json.dumps(manifest)


def test_a_pull_secret_from_a_block_needs_a_server_to_render(tmp_path: Path, monkeypatch) -> None:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    config = config_for(tmp_path, image_pull_secret_block="ngc-pull-secret")
    assert job_variables(tao_job(config), config)["image_pull_secrets"] == [
        {"name": "{{ prefect.blocks.string.ngc-pull-secret }}"}
    ]
    with pytest.raises(ConfigError, match="PREFECT_API_URL"):
        render_job_manifest(tao_job(config), config)


def test_results_outside_the_workspace_volume_are_refused(tmp_path: Path) -> None:
    config = config_from_mapping({"workspace": str(tmp_path / "ws"), "results_root": str(tmp_path / "elsewhere")})
    with pytest.raises(ConfigError, match="results_root"):
        job_variables(tao_job(config), config)


def test_conflicting_workspace_sources_are_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="workspace_pvc or workspace_volume"):
        config_for(tmp_path, workspace_pvc="a", workspace_volume={"nfs": {"server": "s", "path": "/"}})


@pytest.mark.parametrize(
    ("path", "broken"),
    [
        (("volumes", 0, "persistentVolumeClaim"), {"claimname": "aoi-workspace"}),  # misspelt, claimName missing
        (("volumes", 1, "emptyDir"), {"medium": "Memory", "sizelimit": "16Gi"}),
        (("tolerations",), {"key": "nvidia.com/gpu"}),  # an object where a list belongs
    ],
)
def test_a_broken_template_field_fails_validation(tmp_path: Path, path: tuple[Any, ...], broken: Any) -> None:
    template = load_base_job_template()
    config = config_for(tmp_path)
    validate_strict(render_job_manifest(tao_job(config), config, template=template))
    corrupted = copy.deepcopy(template)
    target = corrupted["job_configuration"]["job_manifest"]["spec"]["template"]["spec"]
    if path[0] == "volumes" and path[1] == 0:
        corrupted["variables"]["properties"]["workspace_volume"]["default"] = {"name": "workspace", path[2]: broken}
    else:
        for key in path[:-1]:
            target = target[key]
        target[path[-1]] = broken
    with pytest.raises(kubernetes_validate.ValidationError):
        validate_strict(render_job_manifest(tao_job(config), config, template=corrupted))


def test_strict_validation_rejects_only_the_pod_fields_the_worker_demands(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    manifest = render_job_manifest(tao_job(config), config)
    with pytest.raises(kubernetes_validate.ValidationError) as error:
        kubernetes_validate.validate(manifest, KUBERNETES_VERSION, strict=True)
    assert "'completions', 'parallelism' were unexpected" in str(error.value)


def test_the_kubernetes_validate_command_passes_a_rendered_manifest_offline(tmp_path: Path) -> None:
    config = config_for(tmp_path)
    manifest = without_worker_pod_fields(render_job_manifest(tao_job(config), config))
    # The command names each resource by metadata.name, which the API server derives from generateName.
    manifest["metadata"]["name"] = manifest["metadata"]["generateName"] + "x7k2q"
    good = tmp_path / "job.yaml"
    good.write_text(yaml.safe_dump(manifest))
    bad = tmp_path / "bad.yaml"
    bad.write_text(good.read_text().replace("claimName", "claimNam"))
    command = [sys.executable, "-m", "kubernetes_validate", "-k", KUBERNETES_VERSION, "--strict"]
    passed = subprocess.run([*command, str(good)], capture_output=True, text=True, check=False)
    assert passed.returncode == 0, passed.stdout + passed.stderr
    failed = subprocess.run([*command, str(bad)], capture_output=True, text=True, check=False)
    assert failed.returncode == 1
    assert "claimNam" in failed.stdout + failed.stderr


def test_the_template_is_the_file_in_deployments() -> None:
    assert (
        find_base_job_template()
        == Path(__file__).resolve().parents[2] / "deployments/kubernetes/base-job-template.json"
    )


def test_a_job_with_mounts_of_this_machine_is_refused(tmp_path: Path) -> None:
    from aoi_pipeline.jobs.job import Mount

    config = config_for(tmp_path)
    job = TaoJob(
        name="j",
        action="train",
        image="i",
        spec={},
        results_dir=config.resolved_results_root / "j",
        mounts=(Mount(tmp_path / "models", "/models"),),
    )

    with pytest.raises(ConfigError, match="mounts only the workspace volume") as refused:
        job_variables(job, config)
    assert refused.value.problems[0].where == "job j mounts"
