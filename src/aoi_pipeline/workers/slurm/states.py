"""What Slurm says about a job, and what it means for the flow run: parsing and classification.

`scontrol show job -o` (one line of Key=Value pairs, kept for `MinJobAge` seconds after the end) and
`sacct --parsable2` (where accounting exists, also for purged jobs) are parsed into a `SlurmJobRecord`.
`classify` maps it to an outcome the pipeline acts on: COMPLETED is success; FAILED (with the program's
exit code), OUT_OF_MEMORY (with the memory that was asked for) and a TIMEOUT at the limit the job asked
for are program errors, hard stops; NODE_FAIL, PREEMPTED, BOOT_FAIL, DEADLINE, REVOKED, a requeue and a
TIMEOUT at a limit the cluster imposed (partition default, an administrator's change) are infrastructure
faults the caller may retry; CANCELLED is a cancellation. An unknown terminal state is a program error: an
unexplained failure must stop the run rather than be retried blindly.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from aoi_pipeline.workers.slurm.sbatch import parse_time_limit

OutcomeKind = Literal["pending", "running", "success", "program", "timed_out", "infrastructure", "cancelled"]

PENDING_STATES = frozenset({"PENDING", "CONFIGURING", "REQUEUE_HOLD", "RESV_DEL_HOLD"})
RUNNING_STATES = frozenset(
    {"RUNNING", "COMPLETING", "SUSPENDED", "STOPPED", "RESIZING", "SIGNALING", "STAGE_OUT", "SPECIAL_EXIT"}
)
REQUEUE_STATES = frozenset({"REQUEUED", "REQUEUE_FED", "REQUEUE_HOLD"})
INFRASTRUCTURE_STATES: Mapping[str, str] = {
    "NODE_FAIL": "a node of the job failed",
    "BOOT_FAIL": "a node of the job failed to boot",
    "PREEMPTED": "the job was preempted by a job of higher priority",
    "DEADLINE": "the job reached its deadline before it could run",
    "REVOKED": "the job was revoked (it ran on another cluster of the federation)",
}
# `Key=Value` pairs of `scontrol show job -o`: keys are single tokens such as `AllocNode:Sid` or `Socks/Node`.
_PAIR_SPLIT = re.compile(r" (?=[A-Za-z][A-Za-z0-9_:/]*=)")
SACCT_FIELDS = ("JobIDRaw", "State", "ExitCode", "Timelimit", "ReqMem", "NodeList")


@dataclass(frozen=True)
class SlurmJobRecord:
    """One job as Slurm reports it."""

    job_id: str
    state: str
    reason: str | None = None
    exit_code: int | None = None
    signal: int | None = None
    time_limit: str | None = None
    restarts: int = 0
    nodes: str | None = None
    memory: str | None = None


@dataclass(frozen=True)
class SlurmOutcome:
    """What a job's record means for the flow run: its kind and a sentence naming the evidence."""

    kind: OutcomeKind
    state: str
    reason: str
    exit_code: int | None = None

    @property
    def finished(self) -> bool:
        return self.kind not in ("pending", "running")


def parse_key_values(line: str) -> dict[str, str]:
    """The Key=Value pairs of one `scontrol show job -o` line."""
    pairs = {}
    for token in _PAIR_SPLIT.split(line.strip()):
        key, sep, value = token.partition("=")
        if sep:
            pairs[key] = value.strip()
    return pairs


def _exit_code(text: str | None) -> tuple[int | None, int | None]:
    if not text or ":" not in text:
        return None, None
    code, signal = text.split(":", 1)
    return (int(code), int(signal)) if code.isdigit() and signal.isdigit() else (None, None)


def _base_state(text: str) -> str:
    # sacct writes "CANCELLED by 1000" and appends "+" when a state continues; scontrol writes the bare word.
    return text.split()[0].rstrip("+").upper() if text.strip() else "UNKNOWN"


def _none_if_null(value: str | None) -> str | None:
    return None if value in (None, "", "(null)", "None", "N/A") else value


def record_from_scontrol(text: str) -> SlurmJobRecord:
    """The record of `scontrol show job -o <id>` (the first job line of its output)."""
    line = next((item for item in text.splitlines() if item.startswith("JobId=")), "")
    pairs = parse_key_values(line)
    if "JobId" not in pairs or "JobState" not in pairs:
        raise ValueError(f"not a `scontrol show job -o` line: {text.strip()[:200]!r}")
    code, signal = _exit_code(pairs.get("ExitCode"))
    memory = pairs.get("MinMemoryNode")
    if memory is None and pairs.get("MinMemoryCPU"):
        memory = f"{pairs['MinMemoryCPU']} per CPU"
    return SlurmJobRecord(
        job_id=pairs["JobId"],
        state=_base_state(pairs["JobState"]),
        reason=_none_if_null(pairs.get("Reason")),
        exit_code=code,
        signal=signal,
        time_limit=_none_if_null(pairs.get("TimeLimit")),
        restarts=int(pairs.get("Restarts", "0") or 0),
        nodes=_none_if_null(pairs.get("NodeList")),
        memory=_none_if_null(memory),
    )


def record_from_sacct(text: str, job_id: str) -> SlurmJobRecord | None:
    """The allocation line of `sacct -X -n -P -o <SACCT_FIELDS> -j <id>`; None when sacct lists no such job."""
    for line in text.splitlines():
        fields = line.split("|")
        if len(fields) < len(SACCT_FIELDS) or fields[0] != job_id:
            continue
        values = dict(zip(SACCT_FIELDS, fields, strict=False))
        code, signal = _exit_code(values["ExitCode"])
        return SlurmJobRecord(
            job_id=job_id,
            state=_base_state(values["State"]),
            exit_code=code,
            signal=signal,
            time_limit=_none_if_null(values["Timelimit"]),
            nodes=_none_if_null(values["NodeList"]),
            memory=_none_if_null(values["ReqMem"]),
        )
    return None


def _minutes(limit: str | None) -> int | None:
    if limit is None:
        return None
    try:
        return parse_time_limit(limit)
    except ValueError:
        return None


def classify(
    record: SlurmJobRecord,
    *,
    requested_time_limit: str | None,
    requested_memory: str | None,
    seen_running: bool = False,
) -> SlurmOutcome:
    """What the record means, given what the job asked for and whether it was seen running before."""
    state, job = record.state, f"Slurm job {record.job_id}"
    where = f" on {record.nodes}" if record.nodes else ""
    if state in REQUEUE_STATES or (state in PENDING_STATES and (record.restarts > 0 or seen_running)):
        why = f" ({record.reason})" if record.reason else ""
        return SlurmOutcome(
            "infrastructure",
            state,
            f"{job} was requeued by Slurm{why}, restart {record.restarts}: an infrastructure fault",
        )
    if state in PENDING_STATES:
        return SlurmOutcome("pending", state, f"{job} is pending ({record.reason or 'no reason given'})")
    if state in RUNNING_STATES:
        return SlurmOutcome("running", state, f"{job} is {state.lower()}{where}")
    if state == "COMPLETED":
        return SlurmOutcome("success", state, f"{job} completed{where}", 0)
    if state == "CANCELLED":
        return SlurmOutcome("cancelled", state, f"{job} was cancelled (scancel)", record.exit_code)
    if state in INFRASTRUCTURE_STATES:
        reason = f"{job} ended {state}{where}: {INFRASTRUCTURE_STATES[state]}; an infrastructure fault, retry it"
        return SlurmOutcome("infrastructure", state, reason, record.exit_code)
    if state == "TIMEOUT":
        return _timeout(record, requested_time_limit)
    if state == "OUT_OF_MEMORY":
        asked = requested_memory or record.memory or "the cluster's default"
        reason = (
            f"{job} ran out of host memory{where} (OUT_OF_MEMORY): it asked for {asked}; "
            "raise the memory job variable or lower the batch size"
        )
        return SlurmOutcome("program", state, reason, record.exit_code)
    if state == "FAILED":
        return _failed(record, where)
    return SlurmOutcome(
        "program", state, f"{job} ended in a state this worker does not know ({state}): stopping, not retrying"
    )


def _failed(record: SlurmJobRecord, where: str) -> SlurmOutcome:
    job = f"Slurm job {record.job_id}"
    if record.reason == "JobLaunchFailure":
        reason = (
            f"{job} failed{where} before the program started (JobLaunchFailure): the output file, the working "
            "directory or the job's environment is unusable on the node; check log_dir and working_dir"
        )
        return SlurmOutcome("program", "FAILED", reason, 1)
    if record.signal:
        code = 128 + record.signal
        return SlurmOutcome(
            "program", "FAILED", f"{job} failed{where}: the program died of signal {record.signal}", code
        )
    code = record.exit_code if record.exit_code else 1
    return SlurmOutcome("program", "FAILED", f"{job} failed{where}: the program exited with code {code}", code)


def _timeout(record: SlurmJobRecord, requested: str | None) -> SlurmOutcome:
    job = f"Slurm job {record.job_id}"
    limit = record.time_limit or "unknown"
    asked = _minutes(requested)
    if requested is not None and asked is not None and asked == _minutes(record.time_limit):
        reason = f"{job} reached the time limit it asked for ({requested}, time_limit job variable)"
        return SlurmOutcome("timed_out", "TIMEOUT", reason, record.exit_code)
    ours = f"the job asked for {requested}" if requested else "the job asked for none"
    reason = (
        f"{job} was stopped at the cluster's time limit {limit} ({ours}): a partition default or an "
        "administrator's change; an infrastructure fault, retry it or set time_limit"
    )
    return SlurmOutcome("infrastructure", "TIMEOUT", reason, record.exit_code)
