"""Tests of the cross-key invariants: what each one lets through, and the checkpoint of eval actions."""

from __future__ import annotations

import pytest

from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.overrides import apply_overrides
from aoi_pipeline.core.spec.validation import validate_spec
from aoi_pipeline.errors import SpecError


def problems_of(excinfo: pytest.ExceptionInfo[SpecError]) -> list[str]:
    return [str(problem) for problem in excinfo.value.problems]


def validation_problems(spec: dict, **kwargs: object) -> list[str]:
    with pytest.raises(SpecError) as excinfo:
        validate_spec(spec, **kwargs)  # type: ignore[arg-type]
    return problems_of(excinfo)


W = "spec.yaml"


def invalid(overrides: list[str], **kwargs: object) -> list[str]:
    return validation_problems(apply_overrides(baseline_spec(), overrides), where=W, **kwargs)


def test_contrastive_loss_is_fine_with_the_euclidean_module() -> None:
    validate_spec(
        apply_overrides(
            baseline_spec(), ["train.classify.loss=contrastive", "model.classify.difference_module=euclidean"]
        )
    )


def test_a_step_checkpoint_interval_is_not_compared_with_epochs() -> None:
    validate_spec(
        apply_overrides(baseline_spec(), ["train.checkpoint_interval_unit=step", "train.checkpoint_interval=200"])
    )


def test_batch_size_one_is_fine_for_inference() -> None:
    spec = apply_overrides(baseline_spec(), ["dataset.classify.batch_size=1", "inference.checkpoint=/r/m.pth"])
    validate_spec(spec, action="inference")


@pytest.mark.parametrize("action", ["evaluate", "inference"])
def test_evaluate_and_inference_need_an_explicit_checkpoint(action: str) -> None:
    assert invalid([], action=action) == [
        f"spec.yaml: {action}.checkpoint: no checkpoint is set for {action} (got ''). Fix: set "
        f"{action}.checkpoint to the container path of the trained .pth, e.g. "
        "/results/baseline/train/model_epoch_009_step_00120.pth"
    ]
    assert invalid([f"{action}.checkpoint='${{results_dir}}/train/m.pth'"], action=action) == [
        f"spec.yaml: {action}.checkpoint: checkpoint '${{results_dir}}/train/m.pth' uses ${{results_dir}}, "
        f"which Hydra rebases for each action. Fix: set {action}.checkpoint to an explicit container path "
        "such as /results/<iteration>/train/<file>.pth"
    ]
