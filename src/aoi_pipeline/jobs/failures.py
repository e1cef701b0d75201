"""Why a TAO job failed, in the two kinds a pipeline acts on, and secret redaction for what it shows.

Infrastructure failures (a process killed from outside, the OOM-killer, CUDA/driver/NCCL initialisation, a
full disk, container start-up and image pulls, node faults, network timeouts) may be retried by the caller
on fresh output paths. Program failures (spec and Hydra errors, dataset errors, tracebacks, a FAILURE status
line, CUDA kernel faults, GPU out-of-memory, a "success" that trained nothing) are hard stops: rerunning the
unchanged job would fail again. Decisive program evidence wins over infrastructure noise that it causes (a
device-side assert cascades into NCCL errors); infrastructure evidence wins over the generic traceback and
FAILURE line that TAO writes for every exception. Anything unrecognised is a program failure, because an
unexplained failure must stop the run rather than be retried blindly.
"""

from __future__ import annotations

import itertools
import re
import signal
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from aoi_pipeline.jobs.status_json import StatusLine

FailureKind = Literal["infrastructure", "program"]
REDACTED = "<redacted>"
_EVIDENCE_LINES_BEFORE = 5
_EVIDENCE_LINES_AFTER = 8
_EVIDENCE_TAIL_LINES = 15
_EVIDENCE_MAX_CHARS = 4000
_REASON_LINE_CHARS = 200
# Shorter "secrets" would mask ordinary words and digits all over a log without protecting anything.
_MIN_SECRET_LENGTH = 4
# Signals sent to a process from outside (operator, scheduler, OOM-killer) vs. raised by its own fault.
_EXTERNAL_SIGNALS = {signal.SIGKILL, signal.SIGTERM, signal.SIGINT, signal.SIGHUP}
_CRASH_SIGNALS = {signal.SIGSEGV, signal.SIGABRT, signal.SIGBUS, signal.SIGFPE, signal.SIGILL}


@dataclass(frozen=True)
class Failure:
    """Why a job failed: its kind, a one-line reason, and the log lines that show it (secrets redacted)."""

    kind: FailureKind
    reason: str
    evidence: str


@dataclass(frozen=True)
class _Rule:
    kind: FailureKind
    reason: str
    pattern: re.Pattern[str]
    window: int | None = None  # only the last `window` log lines count; None: the whole tail


def _rule(kind: FailureKind, reason: str, pattern: str, window: int | None = None) -> _Rule:
    return _Rule(kind, reason, re.compile(pattern, re.IGNORECASE), window)


_DECISIVE_PROGRAM_RULES = (
    _rule(
        "program",
        "a CUDA kernel fault in the program (device-side assert or illegal memory access); a program or data "
        "bug, not the GPU",
        r"device-side assert triggered|illegal memory access was encountered|misaligned address",
    ),
    _rule(
        "program",
        "the GPU ran out of memory; lower the batch size or the image size",
        r"cuda out of memory|outofmemoryerror|cuda error: out of memory|cudnn_status_alloc_failed",
    ),
    _rule("program", "a cuBLAS/cuDNN call failed in the program", r"cublas_status_\w+|cudnn_status_\w+"),
)

_INFRASTRUCTURE_RULES = (
    _rule(
        "infrastructure",
        "the disk is full (No space left on device)",
        r"no space left on device|\[errno 28\]|disk quota exceeded",
    ),
    _rule(
        "infrastructure",
        "shared memory (/dev/shm) is exhausted; give the container a larger --shm-size",
        r"\bbus error\b|insufficient shared memory|unable to write to file </torch_",
    ),
    _rule(
        "infrastructure",
        "the process was killed by the out-of-memory killer",
        r"out of memory: killed process|oom-kill|\boomkilled\b|^\s*killed\s*$",
    ),
    _rule(
        "infrastructure",
        "CUDA or the NVIDIA driver failed to initialise",
        r"cuda driver version is insufficient|no cuda-capable device|cuda error: initialization error"
        r"|cudaerrorinitializationerror|cudaerrornodevice|cuda_error_no_device|cudaerrorsystemnotready"
        r"|found no nvidia driver|nvidia-smi has failed|driver/library version mismatch"
        r"|failed to initialize nvml|cuda initialization",
    ),
    _rule(
        "infrastructure",
        "a GPU hardware fault (Xid, ECC error or a GPU that fell off the bus)",
        r"\bxid\b|fell off the bus|uncorrectable ecc|\becc error|gpu is lost",
    ),
    _rule(
        "infrastructure",
        "NCCL communication failed between GPUs or nodes",
        r"nccl error|ncclsystemerror|ncclinternalerror|ncclremoteerror|nccl watchdog"
        r"|processgroupnccl.*(?:timeout|watchdog)|communicator was aborted",
    ),
    _rule(
        "infrastructure",
        "the runtime command is not installed where the job ran",
        r"command not found|executable file not found",
    ),
    _rule(
        "infrastructure",
        "the runtime's Python dependencies are missing (for aoi-changenet: pip install 'aoi-pipeline[reference]')",
        r"no module named '?(?:torch|torchvision|nvidia_tao_pytorch|nvidia_tao_core)\b",
    ),
    _rule(
        "infrastructure",
        "the container runtime could not start the job or pull its image",
        r"cannot connect to the docker daemon|error response from daemon|pull access denied|manifest unknown"
        r"|manifest for \S+ not found|imagepullbackoff|errimagepull|toomanyrequests|error pulling image"
        r"|failed to pull image|oci runtime (?:create|exec) failed|could not select device driver",
    ),
    _rule(
        "infrastructure",
        "the node failed or the job was preempted or evicted",
        r"\bnode_fail\b|\bboot_fail\b|\bpreempted\b|due to preemption|due to node fail|\bevicted\b"
        r"|node failure",
    ),
    # Network noise early in a log (a telemetry client that cannot connect) must not mask the real error,
    # so only the final block counts here.
    _rule(
        "infrastructure",
        "a network operation failed or timed out",
        r"connection timed out|read timed out|tls handshake timeout|i/o timeout"
        r"|temporary failure in name resolution|connection reset by peer|network is unreachable",
        window=30,
    ),
)

_SPECIFIC_PROGRAM_RULES = (
    _rule(
        "program",
        "Lightning tried to resume from old checkpoints in the results dir; use a fresh results dir",
        r"misconfigurationexception|current_epoch=\d+, but max_epochs",
    ),
    _rule(
        "program",
        "the experiment spec or an override is invalid",
        r"omegaconf\.errors|configattributeerror|configkeyerror|configtypeerror|missingmandatoryvalue"
        r"|could not override|error merging override|hydra\.errors|specerror|problem\(s\) in the \w+ spec",
    ),
    _rule(
        "program",
        "a dataset file or image is missing or unreadable",
        r"dataseterror|leakageerror|filenotfounderror|no such file or directory|emptydataerror"
        r"|unidentifiedimageerror|cannot identify image file",
    ),
)

_TRACEBACK_RE = re.compile(r"traceback \(most recent call last\)", re.IGNORECASE)
_EXCEPTION_LINE_RE = re.compile(r"^\s*([A-Za-z_][\w.]*(?:Error|Exception|Exit|Interrupt)\b.*)$")
_ERROR_LINE_RE = re.compile(r"^\s*(?:ERROR|FATAL|Error)\b:?\s+(.+)$")
_EXECUTION_FAIL_RE = re.compile(r"execution status:\s*fail", re.IGNORECASE)


def classify_failure(
    *,
    exit_code: int | None,
    log_tail: str,
    status_lines: Iterable[StatusLine],
    wrote_checkpoint: bool | None,
) -> Failure | None:
    """None for a success; otherwise the failure's kind, reason and evidence.

    `exit_code` None means the exit status is unknown (the process was lost). `wrote_checkpoint` is for train
    jobs only (None for other actions): a train job that exits 0 without a new checkpoint trained nothing.
    """
    lines = log_tail.splitlines()
    failure_lines = [line for line in status_lines if line.status == "FAILURE"]
    execution_failed = any(_EXECUTION_FAIL_RE.search(line) for line in lines)
    zero_step = exit_code == 0 and wrote_checkpoint is False
    if exit_code == 0 and not failure_lines and not execution_failed and not zero_step:
        return None

    if found := _first_rule_match(_DECISIVE_PROGRAM_RULES, lines):
        return _from_match(found, lines)
    signum = _signal_of(exit_code)
    if signum in _EXTERNAL_SIGNALS:
        return Failure("infrastructure", _signal_reason(signum, exit_code), _tail_evidence(lines))
    if found := _first_rule_match(_INFRASTRUCTURE_RULES, lines):
        return _from_match(found, lines)
    if found := _first_rule_match(_SPECIFIC_PROGRAM_RULES, lines):
        return _from_match(found, lines)
    if failure_lines:
        message = redact(failure_lines[-1].message.strip(), ())[:_REASON_LINE_CHARS] or "no message"
        return Failure("program", f"the job wrote a FAILURE status: {message}", _tail_evidence(lines))
    if (traceback := _traceback_reason(lines)) is not None:
        return Failure("program", traceback[0], _evidence_around(lines, traceback[1]))
    if signum is not None:
        return Failure("program", _signal_reason(signum, exit_code), _tail_evidence(lines))
    if exit_code is None:
        return Failure(
            "infrastructure",
            "the job ended without an exit status (its process or container was lost)",
            _tail_evidence(lines),
        )
    if (exit_code != 0 or execution_failed) and (error := _error_line(lines)) is not None:
        return Failure("program", f"the job failed: {error[0]}", _evidence_around(lines, error[1]))
    if execution_failed:
        return Failure("program", "the job reported 'Execution status: FAIL'", _tail_evidence(lines))
    if zero_step:
        return Failure(
            "program",
            "train reported success but wrote no new checkpoint (nothing was trained: check num_epochs, "
            "checkpoint_interval and any resume checkpoint)",
            _tail_evidence(lines),
        )
    return Failure("program", f"the job exited with code {exit_code}", _tail_evidence(lines))


def redact(text: str, secret_values: Iterable[str]) -> str:
    """`text` with every given secret value and every obvious credential literal replaced by <redacted>.

    Obvious literals: `NAME=value` / `NAME: value` where NAME is credential-like (`*_KEY`, `*TOKEN*`,
    `*SECRET*`, `*PASSWORD*`, `*PASSWD*`, `*CREDENTIAL*`, word-bounded so `TOKENIZERS_PARALLELISM` passes),
    `--password/--token/--api-key` values, URL passwords, presigned-URL signatures and well-known token
    formats (nvapi-, hf_, ghp_, github_pat_, AKIA, xox?-, sk-). Variable references (`$NAME`, `${NAME}`)
    are not secrets and are kept.
    """
    values = sorted({value for value in secret_values if value and len(value) >= _MIN_SECRET_LENGTH}, key=len)
    for value in reversed(values):  # longest first, so a secret containing another is masked whole
        text = text.replace(value, REDACTED)
    for pattern, replacement in _FORMAT_RULES:
        text = pattern.sub(replacement, text)
    text = _FLAG_RE.sub(lambda m: m["flag"] + REDACTED, text)
    return _ASSIGNMENT_RE.sub(_redact_assignment, text)


_FORMAT_RULES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\bnvapi-[A-Za-z0-9_\-]{16,}"), REDACTED),
    (re.compile(r"\bhf_[A-Za-z0-9]{16,}"), REDACTED),
    (re.compile(r"\bghp_[A-Za-z0-9]{16,}"), REDACTED),
    (re.compile(r"\bgithub_pat_[A-Za-z0-9_]{16,}"), REDACTED),
    (re.compile(r"\bAKIA[0-9A-Z]{16}\b"), REDACTED),
    (re.compile(r"\bxox[baprs]-[A-Za-z0-9\-]{10,}"), REDACTED),
    (re.compile(r"\bsk-[A-Za-z0-9_\-]{16,}"), REDACTED),
    (re.compile(r"(\b[A-Za-z][A-Za-z0-9+.\-]*://[^/\s:@]+):[^@\s/]+@"), rf"\1:{REDACTED}@"),
    (
        re.compile(r"(X-Amz-(?:Signature|Credential|Security-Token)=)[^&\s\"']+", re.IGNORECASE),
        rf"\1{REDACTED}",
    ),
    (re.compile(r"(Authorization:[ \t]*(?:Bearer|Basic)[ \t]+)\S+", re.IGNORECASE), rf"\1{REDACTED}"),
)
_FLAG_RE = re.compile(
    r"(?P<flag>--(?:password|passwd|token|api-key|api_key|secret)(?:=|[ \t]+))(?!stdin\b)"
    r"(?:\"[^\"\n]*\"|'[^'\n]*'|[^\s\"']+)",
    re.IGNORECASE,
)
_ASSIGNMENT_RE = re.compile(
    r"(?P<name>[A-Za-z_][A-Za-z0-9_.\-]*)(?P<sep>[\"']?[ \t]*[=:][ \t]*)"
    r"(?P<value>\"[^\"\n]*\"|'[^'\n]*'|[^\s,;\"'}\]]+)"
)
_NON_SECRET_VALUES = frozenset({"true", "false", "yes", "no", "none", "null", "~", ""})
_SENSITIVE_WORDS = frozenset({"secret", "secrets", "token", "credential", "credentials", "apikey"})


def _redact_assignment(match: re.Match[str]) -> str:
    name, value = match["name"], match["value"]
    if not is_credential_name(name) or _is_reference(value) or _is_flag(value) or REDACTED in value:
        return match[0]
    quote = value[0] if value[0] in "\"'" and len(value) > 1 else ""
    return f"{name}{match['sep']}{quote}{REDACTED}{quote}"


def is_credential_name(name: str) -> bool:
    """Whether a variable or key name denotes a credential (NGC_API_KEY, HF_TOKEN, db.password)."""
    last = name.rsplit(".", 1)[-1].lower()
    if "password" in last or "passwd" in last:
        return True
    words = [word for word in re.split(r"[_\-]+", last) if word]
    if not words:
        return False
    joined_pairs = {a + b for a, b in itertools.pairwise(words)}
    # A bare `key:` is everyday YAML; `NGC_API_KEY`, `encryption_key` and `access_key` name credentials.
    return (len(words) > 1 and words[-1] == "key") or bool(_SENSITIVE_WORDS & (set(words) | joined_pairs))


def _is_flag(value: str) -> bool:
    """A boolean or null is a setting (TAO's `use_summary_token: true`), never a credential."""
    return value.strip("\"'").lower() in _NON_SECRET_VALUES


def _is_reference(value: str) -> bool:
    """`$NAME`, `${NAME}` or `$(NAME)`: a reference to a secret, not the secret (a `:-default` is literal)."""
    unquoted = value.strip("\"'")
    return unquoted.startswith("$") and ":-" not in unquoted


@dataclass(frozen=True)
class _Match:
    rule: _Rule
    index: int  # line index in the whole tail


def _first_rule_match(rules: Iterable[_Rule], lines: list[str]) -> _Match | None:
    """The first rule (in priority order) that matches; its last matching line (closest to the end).

    Plain log lines are preferred to echoed status.json records, which repeat the error less readably.
    """
    for rule in rules:
        start = 0 if rule.window is None else max(0, len(lines) - rule.window)
        hits = [index for index in range(start, len(lines)) if rule.pattern.search(lines[index])]
        if hits:
            plain = [index for index in hits if not lines[index].lstrip().startswith("{")]
            return _Match(rule, (plain or hits)[-1])
    return None


def _from_match(found: _Match, lines: list[str]) -> Failure:
    line = redact(lines[found.index].strip(), ())
    line = line if len(line) <= _REASON_LINE_CHARS else line[:_REASON_LINE_CHARS] + "..."
    return Failure(found.rule.kind, f"{found.rule.reason} ({line})", _evidence_around(lines, found.index))


def _traceback_reason(lines: list[str]) -> tuple[str, int] | None:
    """'the program raised <last exception line>' and that line's index, for a log with a traceback."""
    starts = [index for index, line in enumerate(lines) if _TRACEBACK_RE.search(line)]
    if not starts:
        return None
    for index in range(len(lines) - 1, starts[-1], -1):
        if match := _EXCEPTION_LINE_RE.match(lines[index]):
            return f"the program raised {redact(match[1].strip(), ())[:300]}", index
    return "the program raised an exception (Python traceback)", starts[-1]


def _error_line(lines: list[str]) -> tuple[str, int] | None:
    """The last `ERROR: ...` line a runtime printed, and its index."""
    for index in range(len(lines) - 1, -1, -1):
        if match := _ERROR_LINE_RE.match(lines[index]):
            return redact(match[1].strip(), ())[:300], index
    return None


def _signal_of(exit_code: int | None) -> signal.Signals | None:
    """The signal that ended the process: negative codes from Popen, 128+N from shells and containers."""
    if exit_code is None:
        return None
    number = -exit_code if exit_code < 0 else exit_code - 128 if 128 < exit_code <= 128 + 64 else None
    if number is None:
        return None
    try:
        return signal.Signals(number)
    except ValueError:
        return None


def _signal_reason(signum: signal.Signals, exit_code: int | None) -> str:
    reason = f"the process was killed by {signum.name} (exit code {exit_code})"
    if signum == signal.SIGKILL:
        return reason + ": the out-of-memory killer, a container memory limit or a scheduler/operator kill"
    if signum in _EXTERNAL_SIGNALS:
        return reason + ": stopped from outside (preemption, node shutdown or an operator)"
    if signum in _CRASH_SIGNALS:
        return f"the program crashed with {signum.name} (exit code {exit_code})"
    return reason


def _evidence_around(lines: list[str], index: int) -> str:
    start = max(0, index - _EVIDENCE_LINES_BEFORE)
    return _evidence(lines[start : index + _EVIDENCE_LINES_AFTER + 1])


def _tail_evidence(lines: list[str]) -> str:
    meaningful = [line for line in lines if line.strip()]
    return _evidence(meaningful[-_EVIDENCE_TAIL_LINES:])


def _evidence(lines: list[str]) -> str:
    text = redact("\n".join(lines), ())
    return text if len(text) <= _EVIDENCE_MAX_CHARS else "..." + text[-_EVIDENCE_MAX_CHARS:]
