"""Stage names and iteration labels: one spelling, stored in the run state as plain text."""

from __future__ import annotations

import json

import pytest

from aoi_pipeline.core.stages import ITER_LABEL_RE, STAGES, LoopStep, Stage, iteration_number, previous_label


def test_stages_are_the_texts_the_run_state_stores_in_iteration_order() -> None:
    assert [str(stage) for stage in STAGES] == [
        "train",
        "evaluate",
        "rca",
        "routing",
        "anomalygen",
        "data_mining",
        "data_merge",
        "loop_stop",
    ]
    assert json.dumps({"stage": Stage.DATA_MINING}) == '{"stage": "data_mining"}'
    assert Stage("loop_stop") is Stage.LOOP_STOP
    assert {step.value for step in LoopStep}.isdisjoint(STAGES)


@pytest.mark.parametrize(
    ("label", "number", "previous"),
    [("baseline", 0, "baseline"), ("iter1", 1, "baseline"), ("iter2", 2, "iter1"), ("iter12", 12, "iter11")],
)
def test_iteration_numbers_and_the_label_each_iteration_starts_from(label: str, number: int, previous: str) -> None:
    assert ITER_LABEL_RE.fullmatch(label)
    assert iteration_number(label) == number
    assert previous_label(label) == previous
