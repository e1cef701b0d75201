"""Publishing to a real S3 server (Ceph RGW from `.ci/services.sh start s3`) through prefect-aws blocks.

Covers a publish checked object by object against its manifest, a publish killed mid-upload and resumed
(bucket versioning on, so a re-upload would show as a second version), an unreachable endpoint, the
pre-flight's read-only probe, and the flow publishing at its end. The S3 user's secret key is the sentinel:
it must appear in no output, run file, Prefect log or artifact.
"""

from __future__ import annotations

import hashlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.config import PublishSettings
from aoi_pipeline.errors import PublishError
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.publish import probe_bucket, publish_and_record

pytestmark = [pytest.mark.integration, pytest.mark.timeout(900)]

ENDPOINT = os.environ.get("AOI_TEST_S3_ENDPOINT_URL")
ACCESS_KEY = os.environ.get("AOI_TEST_S3_ACCESS_KEY", "aoi-ci-access")
SECRET_KEY = os.environ.get("AOI_TEST_S3_SECRET_KEY", "aoi-ci-secret-do-not-log")
RUN_NAME = "run_20260102_030405"
FILE_NAMES = {
    "best_model.json",
    "best_model_inference_spec.yaml",
    "run_report.html",
    "approval.json",
    "model_epoch_002_step_00010.pth",
}

if not ENDPOINT:
    pytest.skip(
        "no S3 server: run `bash .ci/services.sh start s3` and export AOI_TEST_S3_ENDPOINT_URL=http://127.0.0.1:7480",
        allow_module_level=True,
    )


@pytest.fixture(scope="module")
def admin() -> Any:
    """A plain boto3 client for the test's own look at the bucket (not the code under test)."""
    import boto3

    client = boto3.client(
        "s3",
        endpoint_url=ENDPOINT,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        region_name="us-east-1",
    )
    client.list_buckets()  # fails the module loudly when the server named by the environment is down
    return client


@pytest.fixture
def bucket(admin: Any) -> Iterator[str]:
    """A fresh bucket with versioning on: every upload of a key adds a version, so duplicates are visible."""
    name = f"aoi-test-{uuid.uuid4().hex[:12]}"
    admin.create_bucket(Bucket=name)
    admin.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
    yield name
    # memstore keeps objects in RAM: empty and drop the bucket.
    for upload in admin.list_multipart_uploads(Bucket=name).get("Uploads", []):
        admin.abort_multipart_upload(Bucket=name, Key=upload["Key"], UploadId=upload["UploadId"])
    for page in admin.get_paginator("list_object_versions").paginate(Bucket=name):
        for item in page.get("Versions", []) + page.get("DeleteMarkers", []):
            admin.delete_object(Bucket=name, Key=item["Key"], VersionId=item["VersionId"])
    admin.delete_bucket(Bucket=name)


@pytest.fixture(scope="module")
def prefect_api(prefect_server_url: str) -> Iterator[str]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: prefect_server_url}):
        yield prefect_server_url


def _register(bucket: str, *, endpoint: str = "", folder: str = "", name: str = "") -> str:
    from aoi_pipeline.pipeline.publish_blocks import register_s3_blocks

    block = name or f"aoi-test-{uuid.uuid4().hex[:10]}"
    saved = register_s3_blocks(
        {
            "AOI_S3_BLOCK": block,
            "AOI_S3_BUCKET": bucket,
            "AOI_S3_BUCKET_FOLDER": folder,
            "AOI_S3_ENDPOINT_URL": endpoint or ENDPOINT or "",
            "AWS_ACCESS_KEY_ID": ACCESS_KEY,
            "AWS_SECRET_ACCESS_KEY": SECRET_KEY,
            "AWS_DEFAULT_REGION": "us-east-1",
        }
    )
    assert saved == [f"{block}-credentials", block]
    return block


def _finished_run(root: Path, *, checkpoint_bytes: int = 200_000) -> Path:
    """A run directory as the handoff leaves it (publishing treats the files as opaque bytes)."""
    run = root / RUN_NAME
    checkpoint = run / "iter1" / "train" / "model_epoch_002_step_00010.pth"
    checkpoint.parent.mkdir(parents=True)
    checkpoint.write_bytes(os.urandom(checkpoint_bytes))
    best = {"checkpoint": str(checkpoint), "iteration": "iter1", "metric_result": {"name": "far_pct", "value": 2.5}}
    (run / "best_model.json").write_text(json.dumps(best), encoding="utf-8")
    (run / "best_model_inference_spec.yaml").write_text("model:\n  classify: {eval_margin: 0.4}\n", encoding="utf-8")
    (run / "run_report.html").write_text("<html><body>report</body></html>", encoding="utf-8")
    (run / "approval.json").write_text(json.dumps({"decision": "approve", "reviewer": "ci"}), encoding="utf-8")
    (run / "pipeline_state.json").write_text(json.dumps({"phases": {"handoff": {"status": "complete"}}}))
    return run


def _publish(run: Path, block: str, prefix: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(_publish_argv(run, block, prefix), env=_env(), capture_output=True, text=True, timeout=300)


def _publish_argv(run: Path, block: str, prefix: str) -> list[str]:
    command = str(Path(sys.executable).parent / "aoi-pipeline")
    return [command, "publish", str(run), "--bucket-block", block, "--prefix", prefix]


def _env() -> dict[str, str]:
    from prefect.settings import PREFECT_API_URL

    env = {key: value for key, value in os.environ.items() if not key.startswith("AWS_")}
    return {**env, "PREFECT_API_URL": str(PREFECT_API_URL.value()), "PYTHONUNBUFFERED": "1"}


def _keys(admin: Any, bucket: str) -> dict[str, int]:
    """Every key in the bucket with its number of versions."""
    counts: dict[str, int] = {}
    for page in admin.get_paginator("list_object_versions").paginate(Bucket=bucket):
        assert not page.get("DeleteMarkers"), page["DeleteMarkers"]
        for item in page.get("Versions", []):
            counts[item["Key"]] = counts.get(item["Key"], 0) + 1
    return counts


def _check_against_manifest(admin: Any, bucket: str, folder: str, run: Path) -> dict[str, Any]:
    """Download every object the manifest lists; its sum must match the manifest and the local file."""
    manifest = json.loads(admin.get_object(Bucket=bucket, Key=f"{folder}/manifest.json")["Body"].read())
    assert {entry["name"] for entry in manifest["files"]} == FILE_NAMES
    local = {path.name: path for path in run.rglob("*") if path.is_file()}
    for entry in manifest["files"]:
        body = admin.get_object(Bucket=bucket, Key=f"{folder}/{entry['name']}")["Body"].read()
        assert hashlib.sha256(body).hexdigest() == entry["sha256"], entry["name"]
        assert len(body) == entry["size"]
        assert body == local[entry["name"]].read_bytes(), entry["name"]
    return manifest


def _assert_no_secret(*texts: str | bytes) -> None:
    for text in texts:
        data = text.encode() if isinstance(text, str) else text
        assert SECRET_KEY.encode() not in data


def _tree_bytes(root: Path) -> dict[str, bytes]:
    return {str(path.relative_to(root)): path.read_bytes() for path in sorted(root.rglob("*")) if path.is_file()}


def test_a_publish_lands_under_prefix_and_run_with_a_manifest_that_matches_every_object(
    prefect_api: str, admin: Any, bucket: str, tmp_path: Path
) -> None:
    run = _finished_run(tmp_path)
    block = _register(bucket, folder="deliverables")
    first = _publish(run, block, "models/line7")
    assert first.returncode == 0, first.stderr
    folder = f"deliverables/models/line7/{RUN_NAME}"
    assert f"published s3://{bucket}/{folder}/: 6 objects uploaded" in first.stdout
    assert _keys(admin, bucket) == {f"{folder}/{name}": 1 for name in [*FILE_NAMES, "manifest.json"]}
    manifest = _check_against_manifest(admin, bucket, folder, run)
    assert (manifest["run"], manifest["iteration"]) == (RUN_NAME, "iter1")
    head = admin.head_object(Bucket=bucket, Key=f"{folder}/model_epoch_002_step_00010.pth")
    assert (
        head["Metadata"]["sha256"]
        == hashlib.sha256((run / "iter1/train/model_epoch_002_step_00010.pth").read_bytes()).hexdigest()
    )

    again = publish_and_record(RunLayout(run), PublishSettings(bucket_block=block, prefix="models/line7"))
    assert not again.changed and "already published" in again.summary()
    assert set(_keys(admin, bucket).values()) == {1}  # nothing uploaded twice
    state = json.loads((run / "pipeline_state.json").read_text())
    assert state["phases"]["handoff"]["status"] == "complete"
    assert state["publish"]["status"] == "published"
    assert state["publish"]["destination"] == f"s3://{bucket}/{folder}/"
    _assert_no_secret(first.stdout, first.stderr, *_tree_bytes(run).values())


def test_a_publish_killed_mid_upload_resumes_without_duplicating_any_object(
    prefect_api: str, admin: Any, bucket: str, tmp_path: Path
) -> None:
    run = _finished_run(tmp_path, checkpoint_bytes=96 * 1024 * 1024)  # multipart: several parts in flight
    block = _register(bucket)
    folder = f"nightly/{RUN_NAME}"
    process = subprocess.Popen(
        _publish_argv(run, block, "nightly"),
        env=_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 120
        while not admin.list_multipart_uploads(Bucket=bucket).get("Uploads"):
            assert process.poll() is None, f"the publish ended before the checkpoint upload: {process.stdout.read()!r}"
            assert time.monotonic() < deadline, "the checkpoint upload never started"
            time.sleep(0.02)
        os.killpg(process.pid, signal.SIGKILL)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
        output = process.communicate(timeout=30)[0]
    before = _keys(admin, bucket)
    assert f"{folder}/manifest.json" not in before, "a reader would see a half-published version"
    assert f"{folder}/best_model.json" in before  # the small files went first
    assert admin.list_multipart_uploads(Bucket=bucket).get("Uploads")  # the kill left the checkpoint unfinished

    resumed = publish_and_record(RunLayout(run), PublishSettings(bucket_block=block, prefix="nightly"))
    assert resumed.already_present and "model_epoch_002_step_00010.pth" in resumed.uploaded, resumed
    assert _keys(admin, bucket) == {f"{folder}/{name}": 1 for name in [*FILE_NAMES, "manifest.json"]}
    assert not admin.list_multipart_uploads(Bucket=bucket).get("Uploads")  # the dangling parts were aborted
    _check_against_manifest(admin, bucket, folder, run)
    _assert_no_secret(output, *_tree_bytes(run).values())


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def test_an_unreachable_bucket_leaves_the_deliverable_intact_with_an_error_event_and_a_clear_message(
    prefect_api: str, bucket: str, tmp_path: Path
) -> None:

    run = _finished_run(tmp_path)
    endpoint = f"http://127.0.0.1:{_closed_port()}"
    block = _register(bucket, endpoint=endpoint)
    before = _tree_bytes(run)
    started = time.monotonic()
    with pytest.raises(PublishError) as caught:
        publish_and_record(RunLayout(run), PublishSettings(bucket_block=block, prefix="models"))
    assert time.monotonic() - started < 60
    message = str(caught.value)
    assert f"S3Bucket block '{block}' -> s3://{bucket}/models/{RUN_NAME}/ (endpoint {endpoint})" in message
    assert "cannot be reached" in message and "correct the endpoint_url" in message
    assert "intact there" in message
    assert f"aoi-pipeline publish {run} --bucket-block {block} --prefix models" in message
    after = _tree_bytes(run)
    state = json.loads(after.pop("pipeline_state.json"))
    before.pop("pipeline_state.json")
    assert after == before  # nothing of the deliverable changed
    assert state["publish"]["status"] == "error"
    assert "cannot be reached" in state["publish"]["events"][-1]["summary"]
    reachable, why = probe_bucket(block)
    assert not reachable and "cannot be reached" in why
    _assert_no_secret(message, json.dumps(state), why)


def test_the_preflight_probe_reads_the_bucket_without_writing(prefect_api: str, admin: Any, bucket: str) -> None:

    block = _register(bucket)
    assert probe_bucket(block) == (True, f"s3://{bucket} via block '{block}' reachable (read-only HEAD)")
    assert _keys(admin, bucket) == {}
    assert not admin.list_multipart_uploads(Bucket=bucket).get("Uploads")
    missing, why = probe_bucket(_register(f"{bucket}-absent"))
    assert not missing and "does not exist" in why


# ------------------------------------------------------------------------------------------ the flow


def _flow_config(tmp_path: Path, block: str) -> Any:
    from aoi_pipeline.config import config_from_mapping
    from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

    workspace = tmp_path / "workspace"
    write_workspace(workspace, SynthSpec(boards=12, size=32, seed=3))
    return config_from_mapping(
        {
            "workspace": str(workspace),
            "kpi_target": "FAR < 50% at Recall=100%",
            "gpus": 0,
            "dataset": {"image_ext": ".png"},
            "spec_overrides": ["dataset.classify.image_width=32", "dataset.classify.image_height=32"],
            "phase1": {"recommendations": 1, "num_epochs": 2, "batch_size": 4},
            "deft": {"max_iterations": 0, "num_epochs": 2},
            "phase3": {"enabled": False},
            "publish": {"bucket_block": block, "prefix": "flow"},
        }
    )


def _run_flow(config: Any, run_name: str) -> dict[str, Any]:
    from aoi_pipeline.pipeline.preflight import run_preflight
    from flows.aoi_pipeline import aoi_pipeline

    plan = run_preflight(config, run_name=run_name).plan_hash
    flow = aoi_pipeline.with_options(flow_run_name=run_name)
    return flow(config=config, run_name=run_name, preapproved_plan_hash=plan, preapproved_by="ci")


def _prefect_logs_and_artifacts(run_name: str, expected: str) -> str:
    """The Prefect logs and artifacts of every flow run of that name, once the expected line has arrived."""
    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import (
        ArtifactFilter,
        ArtifactFilterFlowRunId,
        FlowRunFilter,
        FlowRunFilterName,
        LogFilter,
        LogFilterFlowRunId,
    )

    deadline = time.monotonic() + 60
    with get_client(sync_client=True) as client:
        runs = client.read_flow_runs(flow_run_filter=FlowRunFilter(name=FlowRunFilterName(any_=[run_name])))
        ids = [run.id for run in runs]
        while True:
            logs = client.read_logs(log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=ids)))
            text = "\n".join(log.message for log in logs)
            if expected in text or time.monotonic() > deadline:
                break
            time.sleep(1)
        artifacts = client.read_artifacts(artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=ids)))
    assert expected in text, text[-3000:]
    return text + "\n".join(f"{artifact.description}\n{artifact.data}" for artifact in artifacts)


def test_the_flow_publishes_at_its_end_and_a_rerun_finishes_a_publish_the_bucket_refused(
    prefect_api: str, admin: Any, bucket: str, tmp_path: Path, fake_runtime: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aoi_pipeline.pipeline.preflight import HostProbe

    block = _register(bucket, endpoint=f"http://127.0.0.1:{_closed_port()}")
    config = _flow_config(tmp_path, block)
    run_name = "run_20260103_000000"
    run = config.resolved_results_root / run_name
    # The bucket answered at approval time and went away before the end of the run.
    with monkeypatch.context() as lost:
        lost.setattr(HostProbe, "bucket_reachable", lambda self, name: (True, "reachable at approval time"))
        with pytest.raises(PublishError, match="cannot be reached"):
            _run_flow(config, run_name)
    deliverable = _tree_bytes(run)
    assert {"best_model.json", "best_model_inference_spec.yaml", "run_report.html"} <= set(deliverable)
    state = json.loads(deliverable["pipeline_state.json"])
    assert state["phases"]["handoff"]["status"] == "complete"
    assert state["publish"]["status"] == "error"
    jobs_run = fake_runtime.read_text().count("\n")

    assert _register(bucket, endpoint=ENDPOINT or "", name=block) == block  # the endpoint fixed
    result = _run_flow(config, run_name)
    folder = f"flow/{run_name}"
    assert result["published"]["destination"] == f"s3://{bucket}/{folder}/"
    assert fake_runtime.read_text().count("\n") == jobs_run  # only the publish ran again
    checkpoint = Path(json.loads(deliverable["best_model.json"])["checkpoint"]).name
    names = [*(FILE_NAMES - {"model_epoch_002_step_00010.pth"}), checkpoint, "manifest.json"]
    assert _keys(admin, bucket) == {f"{folder}/{name}": 1 for name in names}
    state = json.loads((run / "pipeline_state.json").read_text())
    assert [event["status"] for event in state["publish"]["events"]] == ["error", "published"]
    prefect_text = _prefect_logs_and_artifacts(run_name, f"published s3://{bucket}/{folder}/")
    _assert_no_secret(prefect_text, *_tree_bytes(run).values())
