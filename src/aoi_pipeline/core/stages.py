"""The names of the DEFT loop: its commit stages, the steps `next_stage` answers, and the iteration labels.

Every module that spells a stage takes it from here. `Stage` and `LoopStep` are `StrEnum`s, so a member
compares equal to its text and is written to `deft_state.json` as that text: the JSON state keeps the plain
strings (`"train"`, `"data_mining"`, ...) it always had.
"""

from __future__ import annotations

import re
from enum import StrEnum


class Stage(StrEnum):
    """A stage committed to the run state, in the order of an iteration (deft-spec §5.5)."""

    TRAIN = "train"
    EVALUATE = "evaluate"
    RCA = "rca"
    ROUTING = "routing"
    ANOMALYGEN = "anomalygen"
    DATA_MINING = "data_mining"
    DATA_MERGE = "data_merge"
    LOOP_STOP = "loop_stop"


class LoopStep(StrEnum):
    """What `next_stage` answers besides a stage: hand off, the run is done, or it is hard-stopped."""

    FINALIZE = "finalize"
    COMPLETE = "complete"
    HALT = "halt"


STAGES = tuple(Stage)
# Stages that may commit `skipped` (nothing to generate or mine) instead of running.
SKIPPABLE_STAGES = (Stage.ANOMALYGEN, Stage.DATA_MINING)
STOP_REASONS = ("metric_met", "max_iterations", "pool_budget")

BASELINE = "baseline"
FINAL_AUTOML = "final_automl"
# The reference accepts `baseline|iter[1-9][0-9]*`; Phase 3 registers its winner under `final_automl`.
ITER_LABEL_RE = re.compile(r"baseline|iter[1-9][0-9]*|final_automl")
PHASE1_SOURCE = "automl_phase1"


def iteration_number(label: str) -> int:
    """N of `iterN`; 0 for the baseline (and for `final_automl`, which is no loop iteration)."""
    return int(label[4:]) if label.startswith("iter") else 0


def previous_label(label: str) -> str:
    """The label whose model `label` starts from: the baseline for iter1, iterN-1 after that."""
    number = iteration_number(label)
    return BASELINE if number <= 1 else f"iter{number - 1}"
