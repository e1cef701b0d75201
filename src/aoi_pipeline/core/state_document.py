"""Checks of the `deft_state.json` document itself: the inputs of a new run and the shape of a stored one.

`read_state` refuses a document these checks find fault with, naming the file, the key and the fix, before
anything else reads it; `init_state` refuses inputs that could not make a valid document. The small value
tests (`is_int`, `is_json`, `jsonable`) are shared with the commit checks.
"""

from __future__ import annotations

import json
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeGuard

from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.stages import ITER_LABEL_RE
from aoi_pipeline.errors import AoiPipelineError, Problem, StateError

STATE_VERSION = 4
RUN_STATUSES = ("pending", "in_progress", "complete", "failed")

RESTORE_FIX = (
    "restore deft_state.json from a backup of the run directory, or start a fresh run in a new results "
    "directory; never edit the file by hand"
)
_TOP_LEVEL_TYPES: dict[str, type] = {
    "version": int,
    "started_at": str,
    "status": str,
    "kpi_target": str,
    "metric_contract": dict,
    "results_dir": str,
    "max_iterations": int,
    "current_iteration": int,
    "config": dict,
    "iterations": dict,
    "events": list,
}
_TARGET_FIX = "give a KPI target such as 'FAR < 5% at Recall=100%'"


def init_problems(
    path: Path,
    kpi_target: object,
    metric_contract: object,
    max_iterations: object,
    config: object,
) -> list[Problem]:
    problems: list[Problem] = []
    if path.exists():
        problems.append(already_initialised(path).problems[0])
    if not isinstance(kpi_target, str) or not kpi_target.strip():
        problems.append(Problem("kpi_target", f"must be a non-empty text, got {kpi_target!r}", _TARGET_FIX))
    if not is_int(max_iterations) or max_iterations < 0:
        problems.append(
            Problem(
                "max_iterations",
                f"must be a non-negative integer, got {max_iterations!r}",
                "set 0 (evaluate the baseline only) or more",
            )
        )
    if not isinstance(config, Mapping):
        problems.append(Problem("config", f"must be a mapping, got {type(config).__name__}", "pass a dict"))
    elif not is_json(config):
        problems.append(Problem("config", "holds values JSON cannot store", "pass strings, numbers, lists"))
    if not isinstance(metric_contract, Mapping):
        problems.append(
            Problem("metric_contract", f"must be a mapping, got {type(metric_contract).__name__}", _TARGET_FIX)
        )
    else:
        try:
            MetricContract.from_dict(metric_contract)
        except AoiPipelineError as error:
            problems.extend(error.problems)
    return problems


def already_initialised(path: Path) -> StateError:
    return StateError.at(
        str(path),
        "a run state already exists here",
        "resume that run (it continues from this file), or start a fresh run in a new results directory; "
        "a run is never re-initialised in place",
    )


def document_problems(path: Path, state: object) -> list[Problem]:
    where = str(path)
    if not isinstance(state, dict):
        return [Problem(where, f"the top level is a JSON {type(state).__name__}, not an object", RESTORE_FIX)]
    problems: list[Problem] = []
    for key, expected in _TOP_LEVEL_TYPES.items():
        if key not in state:
            problems.append(Problem(where, f"required key '{key}' is missing", RESTORE_FIX))
        elif not isinstance(state[key], expected) or isinstance(state[key], bool):
            problems.append(
                Problem(
                    f"{where}: {key}",
                    f"must be a {expected.__name__}, got {state[key]!r:.80}",
                    RESTORE_FIX,
                )
            )
    if problems:
        return problems
    if state["version"] != STATE_VERSION:
        problems.append(
            Problem(
                f"{where}: version",
                f"version {state['version']} is not supported (this release reads version {STATE_VERSION})",
                "finish that run with the release that started it, or start a fresh run",
            )
        )
    if state["status"] not in RUN_STATUSES:
        problems.append(Problem(f"{where}: status", f"{state['status']!r} is not one of {RUN_STATUSES}", RESTORE_FIX))
    if state["max_iterations"] < 0 or state["current_iteration"] < 0:
        problems.append(
            Problem(
                where,
                f"max_iterations {state['max_iterations']} / current_iteration {state['current_iteration']} "
                "out of range",
                RESTORE_FIX,
            )
        )
    for label, entry in state["iterations"].items():
        if not ITER_LABEL_RE.fullmatch(label) or not isinstance(entry, dict):
            problems.append(Problem(f"{where}: iterations.{label}", "not a valid iteration entry", RESTORE_FIX))
    problems.extend(_event_problems(where, state["events"]))
    return problems


def _event_problems(where: str, events: list[Any]) -> list[Problem]:
    problems: list[Problem] = []
    previous: int | None = None
    for index, event in enumerate(events):
        at = f"{where}: events[{index}]"
        if not isinstance(event, dict) or not {"seq", "iter", "stage", "status"} <= event.keys():
            problems.append(Problem(at, "not an event with seq, iter, stage and status", RESTORE_FIX))
            continue
        seq = event["seq"]
        if not is_int(seq):
            continue  # as in the reference, a non-integer seq (a bool, say) takes no part in the order
        if previous is not None and seq <= previous:
            problems.append(
                Problem(at, f"seq {seq} does not increase (previous event has seq {previous})", RESTORE_FIX)
            )
        previous = seq if previous is None else max(previous, seq)
    return problems


def is_int(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool)


def is_number(value: object) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def jsonable(fields: Mapping[str, Any]) -> dict[str, Any]:
    """Commit fields as JSON values: paths become their text, everything else stays as given."""
    return {name: os.fspath(value) if isinstance(value, os.PathLike) else value for name, value in fields.items()}


def is_json(value: object) -> bool:
    try:
        json.dumps(value, allow_nan=False)
    except (TypeError, ValueError):
        return False
    return True
