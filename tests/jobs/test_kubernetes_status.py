"""Where a Kubernetes Job stands and how its failures are classified: infrastructure (retry) or program (stop)."""

from __future__ import annotations

from typing import Any

from aoi_pipeline.jobs.kubernetes_status import classify_job_status


def job(*conditions: tuple[str, str], active: int = 0) -> dict[str, Any]:
    return {
        "status": {
            "active": active,
            "conditions": [{"type": kind, "status": "True", "reason": reason} for kind, reason in conditions],
        }
    }


def pod(phase: str = "Running", *, created: str = "2026-01-01T00:00:00Z", **status: Any) -> dict[str, Any]:
    return {"metadata": {"creationTimestamp": created}, "status": {"phase": phase, **status}}


def terminated(exit_code: int, reason: str = "Error", message: str = "") -> dict[str, Any]:
    state = {"terminated": {"exitCode": exit_code, "reason": reason, "message": message}}
    return {"containerStatuses": [{"name": "prefect-job", "state": state}]}


def test_a_complete_job_succeeded() -> None:
    outcome = classify_job_status(job(("Complete", "")), [pod("Succeeded", **terminated(0, "Completed"))])
    assert (outcome.phase, outcome.failure, outcome.exit_code) == ("succeeded", None, 0)


def test_an_active_job_with_a_running_pod_is_running() -> None:
    assert classify_job_status(job(active=1), [pod("Running")]).phase == "running"
    assert classify_job_status(job(), []).phase == "pending"


def test_a_program_that_exits_non_zero_is_a_hard_stop() -> None:
    outcome = classify_job_status(
        job(("Failed", "BackoffLimitExceeded")),
        [pod("Failed", **terminated(1, message="ERROR: the experiment spec is invalid"))],
    )
    assert outcome.phase == "failed"
    assert outcome.exit_code == 1
    assert outcome.failure.kind == "program"
    assert not outcome.retryable


def test_an_evicted_pod_is_infrastructure_and_retryable() -> None:
    evicted = pod("Failed", reason="Evicted", message="The node was low on resource: memory.")
    outcome = classify_job_status(job(("Failed", "BackoffLimitExceeded")), [evicted])
    assert outcome.failure.kind == "infrastructure"
    assert "Evicted" in outcome.failure.reason
    assert outcome.retryable


def test_a_preempted_pod_is_infrastructure_even_when_its_container_exited_non_zero() -> None:
    disruption = {"type": "DisruptionTarget", "status": "True", "reason": "PreemptionByScheduler", "message": "x"}
    preempted = pod("Failed", conditions=[disruption], **terminated(143))
    outcome = classify_job_status(job(("Failed", "BackoffLimitExceeded")), [preempted])
    assert outcome.failure.kind == "infrastructure"
    assert "PreemptionByScheduler" in outcome.failure.reason


def test_an_eviction_that_used_up_the_retries_wins_over_an_earlier_program_exit() -> None:
    first = pod("Failed", created="2026-01-01T00:00:00Z", **terminated(1))
    second = pod("Failed", created="2026-01-01T00:05:00Z", reason="Evicted", message="node drained")
    outcome = classify_job_status(job(("Failed", "BackoffLimitExceeded")), [second, first])
    assert outcome.failure.kind == "infrastructure"


def test_oom_killed_and_externally_killed_containers_are_infrastructure() -> None:
    oom = classify_job_status(job(("Failed", "BackoffLimitExceeded")), [pod("Failed", **terminated(137, "OOMKilled"))])
    assert oom.failure.kind == "infrastructure"
    assert "out-of-memory" in oom.failure.reason
    killed = classify_job_status(job(("Failed", "BackoffLimitExceeded")), [pod("Failed", **terminated(143))])
    assert killed.failure.kind == "infrastructure"


def test_an_unschedulable_pod_is_pending_with_an_infrastructure_failure() -> None:
    message = "0/3 nodes are available: 3 Insufficient nvidia.com/gpu."
    condition = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable", "message": message}
    outcome = classify_job_status(job(active=1), [pod("Pending", conditions=[condition])])
    assert outcome.phase == "pending"
    assert outcome.failure.kind == "infrastructure"
    assert "Insufficient nvidia.com/gpu" in outcome.failure.reason
    assert outcome.retryable


def test_an_image_that_cannot_be_pulled_is_infrastructure() -> None:
    waiting = {"containerStatuses": [{"name": "c", "state": {"waiting": {"reason": "ImagePullBackOff"}}}]}
    outcome = classify_job_status(job(active=1), [pod("Pending", **waiting)])
    assert (outcome.phase, outcome.failure.kind) == ("pending", "infrastructure")


def test_a_failed_job_without_pods_has_an_unknown_exit_and_is_infrastructure() -> None:
    outcome = classify_job_status(job(("Failed", "BackoffLimitExceeded")), [])
    assert outcome.failure.kind == "infrastructure"
    assert outcome.exit_code is None


def test_a_deadline_exceeded_job_is_a_hard_stop() -> None:
    outcome = classify_job_status(job(("Failed", "DeadlineExceeded")), [])
    assert outcome.failure.kind == "program"
    assert "activeDeadlineSeconds" in outcome.failure.reason


def test_credentials_in_a_termination_message_are_redacted() -> None:
    outcome = classify_job_status(
        job(("Failed", "BackoffLimitExceeded")),
        [pod("Failed", **terminated(1, message="ERROR: login failed NGC_API_KEY=nvapi-abcdefghijklmnop0123"))],
    )
    assert "nvapi-abcdefghijklmnop0123" not in outcome.failure.reason + outcome.failure.evidence
