"""How a Kubernetes Job running a TAO job stands, read from the Job's and its pods' status, in our two failure kinds.

A Job is pending (its pod not yet running), running, succeeded or failed. A failure is classified with the same
two kinds as every other launcher (`failures.py`): an evicted or preempted pod, a pod no node can take, an
image that cannot be pulled, the OOM-killer and an external kill are infrastructure (the caller may retry on a
fresh Job); a container that exits non-zero on its own is a program failure (a hard stop), classified from its
exit code and termination message by `classify_failure`. A pod that no node can take, or whose image cannot be
pulled, never fails on its own: it is reported as pending with its infrastructure failure, so the caller can
give up after its own patience. Input is the JSON the API server returns (camelCase keys); nothing here talks
to a cluster.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from aoi_pipeline.jobs.failures import Failure, classify_failure, redact

JobPhase = Literal["pending", "running", "succeeded", "failed"]

# Pod conditions and container states that say the infrastructure, not the program, ended or blocked the pod.
_DISRUPTION_CONDITION = "DisruptionTarget"
_IMAGE_WAITING_REASONS = frozenset({"ErrImagePull", "ImagePullBackOff", "InvalidImageName", "ErrImageNeverPull"})
_CONFIG_WAITING_REASONS = frozenset({"CreateContainerConfigError", "CreateContainerError"})


@dataclass(frozen=True)
class KubernetesJobOutcome:
    """Where a Job stands; `failure` is set for a failed Job and for a pending one that cannot start."""

    phase: JobPhase
    failure: Failure | None = None
    exit_code: int | None = None

    @property
    def retryable(self) -> bool:
        """Whether a fresh Job may be tried: only for infrastructure failures."""
        return self.failure is not None and self.failure.kind == "infrastructure"


def classify_job_status(job: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> KubernetesJobOutcome:
    """The outcome of a Job from its status and its pods' (newest pod first or last: any order)."""
    status = job.get("status") or {}
    conditions = {c.get("type"): c for c in status.get("conditions") or () if c.get("status") == "True"}
    ordered = sorted(pods, key=lambda pod: str((pod.get("metadata") or {}).get("creationTimestamp", "")))
    if "Complete" in conditions or "SuccessCriteriaMet" in conditions:
        return KubernetesJobOutcome("succeeded", exit_code=0)
    if "Failed" in conditions or "FailureTarget" in conditions:
        return _failed(conditions.get("Failed") or conditions["FailureTarget"], ordered)
    for pod in reversed(ordered):
        if (blocked := _blocked_pod(pod)) is not None:
            return KubernetesJobOutcome("pending", failure=blocked)
    running = any((pod.get("status") or {}).get("phase") == "Running" for pod in ordered)
    return KubernetesJobOutcome("running" if running or (status.get("active") and ordered) else "pending")


def _failed(condition: Mapping[str, Any], pods: Sequence[Mapping[str, Any]]) -> KubernetesJobOutcome:
    """A failed Job: infrastructure evidence of any pod wins (an eviction used up the retries), then the exit."""
    outcomes = [_pod_failure(pod) for pod in pods]
    known = [outcome for outcome in outcomes if outcome is not None]
    for failure, exit_code in reversed(known):
        if failure.kind == "infrastructure":
            return KubernetesJobOutcome("failed", failure, exit_code)
    if known:
        failure, exit_code = known[-1]
        return KubernetesJobOutcome("failed", failure, exit_code)
    reason = str(condition.get("reason") or "")
    message = _clean(condition.get("message"))
    if reason == "DeadlineExceeded":
        failure = Failure("program", f"the Job ran past its activeDeadlineSeconds ({message})", message)
        return KubernetesJobOutcome("failed", failure)
    # No pod left to read (deleted, or cleaned up by a TTL): the exit status is unknown, as for a lost process.
    lost = classify_failure(exit_code=None, log_tail=f"{reason}: {message}", status_lines=(), wrote_checkpoint=None)
    return KubernetesJobOutcome("failed", lost)


def _pod_failure(pod: Mapping[str, Any]) -> tuple[Failure, int | None] | None:
    status = pod.get("status") or {}
    if (disrupted := _disruption(pod)) is not None:
        return disrupted, None
    if (blocked := _blocked_pod(pod)) is not None:
        return blocked, None
    for container in status.get("containerStatuses") or ():
        terminated = (container.get("state") or {}).get("terminated") or (container.get("lastState") or {}).get(
            "terminated"
        )
        if not terminated or terminated.get("exitCode") in (None, 0):
            continue
        exit_code = int(terminated["exitCode"])
        message = _clean(terminated.get("message"))
        if terminated.get("reason") == "OOMKilled":
            evidence = f"container {container.get('name')!r}: OOMKilled (exit code {exit_code})"
            return Failure("infrastructure", "the process was killed by the out-of-memory killer", evidence), exit_code
        failure = classify_failure(exit_code=exit_code, log_tail=message, status_lines=(), wrote_checkpoint=None)
        if failure is not None:
            return failure, exit_code
    if status.get("phase") == "Failed":
        message = _clean(f"{status.get('reason', '')}: {status.get('message', '')}")
        lost = classify_failure(exit_code=None, log_tail=message, status_lines=(), wrote_checkpoint=None)
        # An unknown exit status is always classified as a failure (the process was lost), never None.
        assert lost is not None
        return lost, None
    return None


def _disruption(pod: Mapping[str, Any]) -> Failure | None:
    """An evicted or preempted pod (kubelet pressure, the Eviction API, the scheduler, a taint)."""
    status = pod.get("status") or {}
    disruption = next(
        (
            c
            for c in status.get("conditions") or ()
            if c.get("type") == _DISRUPTION_CONDITION and c.get("status") == "True"
        ),
        None,
    )
    if status.get("reason") != "Evicted" and disruption is None:
        return None
    reason = (disruption or {}).get("reason") or status.get("reason")
    message = _clean((disruption or {}).get("message") or status.get("message"))
    return Failure("infrastructure", f"the node evicted or preempted the pod ({reason}: {message})", message)


def _blocked_pod(pod: Mapping[str, Any]) -> Failure | None:
    """A pod that cannot start: no node can take it, its image cannot be pulled, or a Secret it names is missing."""
    status = pod.get("status") or {}
    for condition in status.get("conditions") or ():
        if condition.get("type") == "PodScheduled" and condition.get("reason") == "Unschedulable":
            message = _clean(condition.get("message"))
            return Failure("infrastructure", f"no node can run the pod ({message})", message)
    for container in status.get("containerStatuses") or ():
        waiting = (container.get("state") or {}).get("waiting") or {}
        reason = waiting.get("reason")
        message = _clean(waiting.get("message"))
        if reason in _IMAGE_WAITING_REASONS:
            return Failure("infrastructure", f"the container runtime could not pull the image ({reason})", message)
        if reason in _CONFIG_WAITING_REASONS:
            return Failure(
                "infrastructure",
                f"the pod cannot start: a Secret, ConfigMap or volume it names is missing ({reason}: {message})",
                message,
            )
    return None


def _clean(text: Any) -> str:
    return redact(str(text or "").strip(), ())[:500]
