"""The `command` metric evaluator: runs the user's evaluator executable on an inference CSV.

The metric contract in the core says what a command evaluator is and checks what it returns; starting the
process lives here, beside the other code that runs programs. `run_evaluator_command` is the
`CommandEvaluator` that the pipeline passes to `evaluate_inference_csv`.
"""

from __future__ import annotations

import subprocess
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from aoi_pipeline.core.metric_contract import Evaluator
from aoi_pipeline.core.metric_result import read_result_json
from aoi_pipeline.errors import MetricContractError

DEFAULT_COMMAND_TIMEOUT_S = 600.0
STDERR_TAIL_CHARS = 2000


def run_evaluator_command(
    evaluator: Evaluator, inference_csv: Path, *, timeout_s: float = DEFAULT_COMMAND_TIMEOUT_S
) -> tuple[Mapping[str, Any], str]:
    """Run `<path> <args...> --inference-csv <abs> --output-json <abs>` (no shell, `timeout_s`).

    Returns the JSON document the command wrote and where it came from (a `CommandEvaluator`). The command
    writes into a scratch file, so a result that later fails the contract's checks never reaches the run.
    """
    csv_path = inference_csv.resolve()
    if not csv_path.is_file():
        raise MetricContractError.at(
            str(csv_path), "the inference CSV does not exist", "run inference first (it writes inference.csv)"
        )
    executable = str(evaluator.path)
    with tempfile.TemporaryDirectory(prefix="aoi-metric-") as scratch:
        raw = _invoke(executable, evaluator.args, csv_path, Path(scratch) / "metric_result.json", timeout_s)
    return raw, f"evaluator command {executable}"


def _invoke(
    executable: str, args: Sequence[str], csv_path: Path, json_path: Path, timeout_s: float
) -> Mapping[str, Any]:
    argv = [executable, *args, "--inference-csv", str(csv_path), "--output-json", str(json_path)]
    where = f"evaluator command {executable}"
    try:
        completed = subprocess.run(argv, capture_output=True, text=True, timeout=timeout_s, check=False)
    except FileNotFoundError:
        raise MetricContractError.at(where, "the executable does not exist", _COMMAND_FIX) from None
    except PermissionError:
        raise MetricContractError.at(where, "the file is not executable", "chmod +x it") from None
    except OSError as exc:
        raise MetricContractError.at(where, f"cannot start it ({exc})", _COMMAND_FIX) from None
    except subprocess.TimeoutExpired as exc:
        raise MetricContractError.at(
            where,
            f"no result after {timeout_s:g} s; stderr tail: {_tail(exc.stderr)!r}",
            "make the evaluator finish sooner or raise the timeout",
        ) from None
    if completed.returncode != 0:
        raise MetricContractError.at(
            where,
            f"exited with status {completed.returncode}; stderr tail: {_tail(completed.stderr)!r}",
            "fix the evaluator (run the argv by hand: " + " ".join(argv) + ")",
        )
    return read_result_json(json_path, f"{where} wrote no result to --output-json")


_COMMAND_FIX = "point evaluator.path at an executable that accepts --inference-csv and --output-json"


def _tail(stream: str | bytes | None) -> str:
    if stream is None:
        return ""
    text = stream.decode(errors="replace") if isinstance(stream, bytes) else stream
    return text[-STDERR_TAIL_CHARS:].strip()
