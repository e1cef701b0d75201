"""The bad-input catalogue: every malformed input a user can hand the product, one parametrized case each.

Each case builds one bad input in a fresh tmp_path, makes the call that must refuse it and checks three
promises of the error contract: the error is the project's own specific class (never a bare ValueError or
KeyError from deep inside), its message names where the fault is, the offending value and the fix, and the
refused call changed nothing on disk (every file's bytes and mtime and every directory listing are the same
before and after).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from string import Template
from typing import Any

import cases_datasets  # noqa: F401  (importing a cases module registers its cases)
import cases_pool_and_bounds  # noqa: F401
import cases_runs_and_images  # noqa: F401
import cases_specs_and_metrics  # noqa: F401
import cases_state_and_config  # noqa: F401
import pytest
from catalogue import (
    CATALOGUE,
    BadInput,
    Scene,
    validate_training,
    write_training,
)

from aoi_pipeline.errors import (
    AoiPipelineError,
    DatasetError,
)

# ------------------------------------------------------------------------------------------------ tests


@pytest.fixture
def scene(tmp_path: Path, tiny_ws: Any) -> Iterator[Scene]:
    scene = Scene(tmp_path, tiny_ws)
    yield scene
    for child in scene.children:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_the_catalogue_covers_at_least_thirty_distinct_inputs() -> None:
    ids = [entry.id for entry in CATALOGUE]
    assert len([entry for entry in CATALOGUE if entry.defect is None]) >= 30
    assert len(set(ids)) == len(ids)


def catalogue_params() -> list[Any]:
    return [
        pytest.param(
            entry,
            id=entry.id,
            marks=[]
            if entry.defect is None
            else [pytest.mark.xfail(strict=True, raises=entry.defect_raises, reason=entry.defect)],
        )
        for entry in CATALOGUE
    ]


@pytest.mark.parametrize("bad", catalogue_params())
def test_bad_input_is_refused_with_an_actionable_message_and_nothing_changes(
    bad: BadInput, scene: Scene, snapshot_tree: Callable[[Path], dict]
) -> None:
    bad.build(scene)
    before = snapshot_tree(scene.root)

    with pytest.raises(AoiPipelineError) as caught:
        bad.call(scene)

    error = caught.value
    assert type(error) is bad.error, f"{type(error).__name__} raised: {error}"
    message = str(error)
    for template in bad.substrings:
        expected = Template(template).substitute(scene.values)
        assert expected in message, f"{expected!r} not in the message:\n{message}"
    assert all(problem.where and problem.what and problem.fix for problem in error.problems)
    assert len(message) < 100_000, f"a {len(message)}-character message is not read by anyone"
    assert snapshot_tree(scene.root) == before


def test_every_problem_of_a_csv_is_reported_at_once(scene: Scene) -> None:
    rows = [scene.ws.sample("b1", "T00", "pass"), scene.ws.sample("b1", "T01", "open")]
    rows[1]["input_path"] = "/abs/b1/test"
    write_training(scene, [*rows, rows[0]])

    with pytest.raises(DatasetError) as caught:
        validate_training(scene, batch_size=64)

    message = str(caught.value)
    for fault in ("'pass'", "'/abs/b1/test' is absolute", "duplicates row 1", "batch_size 64"):
        assert fault in message
    assert len(caught.value.problems) >= 4
