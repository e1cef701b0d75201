"""The night below the flow: the pool it mines, the deployed model it starts from, versioned promotion, the
GPU-hour budget of its jobs, and change detection on a synthetic workspace."""

from __future__ import annotations

import csv
import json
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.config import config_from_mapping
from aoi_pipeline.core.mining_pool import resolve_mining_pool
from aoi_pipeline.core.nightly_changes import compare
from aoi_pipeline.core.nightly_policy import NightlyBudget
from aoi_pipeline.errors import AoiPipelineError, StateError
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.nightly import (
    JobCounter,
    deployed_model,
    night_config,
    promote,
    resolved_pool,
    take_snapshot,
    write_night_pool,
)
from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

BUDGET = NightlyBudget(gpu_hours=0.001, iterations=3, pool_share=0.5, phase3=True)


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("nightly") / "workspace"
    write_workspace(root, SynthSpec(boards=8, size=32, seed=3))
    return root


def _config(workspace: Path, results: Path) -> Any:
    return config_from_mapping({"workspace": str(workspace), "results_root": str(results)})


def _pool_rows(workspace: Path) -> list[dict[str, str]]:
    with (workspace / "augmentation" / "mining_pool" / "mining_pool.csv").open(encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def test_the_night_config_is_the_budget_with_phase1_off(workspace: Path, tmp_path: Path) -> None:
    config = night_config(_config(workspace, tmp_path), BUDGET)
    assert not config.phase1.enabled and config.phase3.enabled
    assert (config.deft.max_iterations, config.deft.max_pool_share) == (3, 0.5)
    # Promotion needs a measured spread: an unset count confirms over 3 retrainings, an explicit one is kept.
    assert config.deft.confirm_seeds == 3
    explicit = config_from_mapping(
        {"workspace": str(workspace), "results_root": str(tmp_path), "deft": {"confirm_seeds": 1}}
    )
    assert night_config(explicit, BUDGET).deft.confirm_seeds == 1


def test_a_copied_pool_row_is_not_new_and_a_reshot_one_is(workspace: Path, tmp_path: Path) -> None:
    copy = tmp_path / "ws"
    shutil.copytree(workspace, copy)
    config = _config(copy, tmp_path / "results")
    before = take_snapshot(config)
    first = _pool_rows(copy)[0]
    # The same images under another directory: a renamed file, not new content.
    shutil.copytree(copy / "images" / first["input_path"], copy / "images" / "renamed" / "test")
    shutil.copytree(copy / "images" / first["golden_path"], copy / "images" / "renamed" / "golden")
    pool = copy / "augmentation" / "mining_pool" / "mining_pool.csv"
    with pool.open("a", encoding="utf-8") as handle:
        handle.write(f"renamed/test,renamed/golden,{first['label']},{first['object_name']},renamed,0\n")
    assert compare(before, take_snapshot(config)).nothing_new
    image = copy / "images" / "renamed" / "test" / f"{first['object_name']}_SolderLight.png"
    image.write_bytes(image.read_bytes() + b"\0")
    changes = compare(before, take_snapshot(config))
    assert len(changes.new_pool) == 1 and changes.breaches() == []


def test_the_night_pool_holds_only_new_rows_and_resolves_from_the_run(workspace: Path, tmp_path: Path) -> None:
    config = _config(workspace, tmp_path / "results")
    pool = resolved_pool(config)
    snapshot = take_snapshot(config)
    newest = set(sorted(snapshot.pool)[:3])
    older = type(snapshot)(snapshot.labelled, snapshot.pool - newest)
    layout = RunLayout.for_run(tmp_path / "results", "nightly_x")
    path = write_night_pool(layout, pool, compare(older, snapshot))
    reread = resolve_mining_pool(path, images_root=workspace / "images", light="SolderLight", image_ext=".png")
    assert len(reread.rows) == 3
    assert set(reread.columns) >= {"boardname", "input_path", "filepath", "golden_path", "label"}


def _handoff(run_dir: Path, value: float) -> Path:
    run_dir.mkdir(parents=True)
    (run_dir / "best_model_inference_spec.yaml").write_text("model: {}\n")
    record = {"checkpoint": str(run_dir / "m.pth"), "iteration": "iter1", "metric_result": {"value": value}}
    (run_dir / "best_model.json").write_text(json.dumps(record))
    return run_dir


def test_promotion_writes_the_next_version_and_keeps_the_previous(workspace: Path, tmp_path: Path) -> None:
    results = tmp_path / "results"
    config = _config(workspace, results)
    with pytest.raises(StateError, match="no handoff"):
        deployed_model(config)
    _handoff(results / "run_first", 4.0)
    first = deployed_model(config)
    assert (first.version, first.record["metric_result"]["value"]) == (0, 4.0)
    _handoff(results / "nightly_1", 3.0)
    assert promote(config, RunLayout.for_run(results, "nightly_1"), first) == 1
    second = deployed_model(config)
    assert (second.version, second.record["night"], second.record["previous"]) == (
        1,
        "nightly_1",
        str(results / "run_first" / "best_model.json"),
    )
    _handoff(results / "nightly_2", 2.0)
    assert promote(config, RunLayout.for_run(results, "nightly_2"), second) == 2
    versions = sorted(path.name for path in (results / "nightly" / "handoffs").iterdir())
    assert versions == ["v0001", "v0002"]
    assert deployed_model(config).record["metric_result"]["value"] == 2.0


@dataclass
class _Result:
    duration_s: float


class _Runner:
    def __init__(self) -> None:
        self.launched: list[str] = []

    def run(self, job: Any) -> _Result:
        self.launched.append(job.name)
        return _Result(duration_s=3.6)


@dataclass
class _Job:
    name: str
    gpus: float


def test_the_job_counter_counts_gpu_hours_and_refuses_past_the_budget() -> None:
    runner = _Runner()
    counter = JobCounter(runner, gpu_hours_budget=0.0015)  # type: ignore[arg-type]
    counter.run(_Job("cpu", 0))  # type: ignore[arg-type]
    counter.run(_Job("gpu", 1))  # type: ignore[arg-type]
    assert (counter.jobs, counter.gpu_hours) == (2, pytest.approx(0.001))
    counter.run(_Job("gpu2", 1))  # type: ignore[arg-type]
    with pytest.raises(AoiPipelineError, match="GPU-hours"):
        counter.run(_Job("gpu3", 1))  # type: ignore[arg-type]
    assert runner.launched == ["cpu", "gpu", "gpu2"]


def _state(baseline: float, candidate: float, seeds: dict[str, Any] | None = None) -> dict[str, Any]:
    contract = {"operator": "<"}
    iterations = {
        "baseline": {"metric_result": {"value": baseline}, "inference_csv": ""},
        "iter1": {"metric_result": {"value": candidate}},
    }
    return {"metric_contract": contract, "iterations": iterations, "confirm_seeds": seeds}


@pytest.fixture
def judged(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Any:
    import aoi_pipeline.pipeline.nightly as nightly

    class _Contract:
        operator, unit = "<", "%"

    monkeypatch.setattr(nightly.MetricContract, "from_dict", staticmethod(lambda raw: _Contract()))

    def judge(state: dict[str, Any], deployed_seeds: dict[str, Any] | None = None) -> Any:
        monkeypatch.setattr(nightly, "read_state", lambda root: state)
        record = {"checkpoint": "m.pth", "confirm_seeds": deployed_seeds} if deployed_seeds else {"checkpoint": "m"}
        deployed = nightly.DeployedModel(tmp_path / "best_model.json", record, 0)
        return nightly.judge_night(RunLayout.for_run(tmp_path, "nightly_1"), "iter1", deployed)

    return judge


def test_a_night_promotes_only_beyond_the_larger_measured_spread(judged: Any) -> None:
    measured = {"candidate": "iter1", "values": [3.0, 3.4], "spread": 0.28}
    assert judged(_state(4.0, 3.2, measured)).promotion.promote
    # The deployed model's recorded spread counts too: a margin of 0.8 is not more than its 0.85.
    deployed_spread = {"values": [4.0, 5.2], "spread": 0.85}
    verdict = judged(_state(4.0, 3.2, measured), deployed_spread)
    assert not verdict.promotion.promote and "spread 0.85" in verdict.promotion.reason
    # One seed everywhere: no spread, no evidence.
    single = judged(_state(4.0, 1.0, {"candidate": "iter1", "values": [1.0], "spread": 0.0}))
    assert not single.promotion.promote and "not measured" in single.promotion.reason
    assert (single.deployed_value, single.candidate_value) == (4.0, 1.0)


def test_drift_is_read_from_the_baseline_inference_on_the_new_rows_only(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import aoi_pipeline.pipeline.nightly as nightly
    from aoi_pipeline.core.nightly_changes import Changes, row_key

    inference = tmp_path / "inference.csv"
    inference.write_text(
        "input_path,golden_path,label,object_name,siamese_score\n"
        "old/t,old/g,PASS,A,0.9\n"  # an old row: flagged, but not new
        "new/t,new/g,PASS,B,0.7\n"
        "new/t,new/g,PASS,C,0.1\n"
        "new/t,new/g,open,D,0.95\n"
    )
    monkeypatch.setattr(
        nightly, "read_state", lambda root: {"iterations": {"baseline": {"inference_csv": str(inference)}}}
    )
    new = tuple(row_key({"input_path": "new/t", "golden_path": "new/g", "object_name": name}) for name in "BCD")
    changes = Changes(new_pool=frozenset(), appended={"kpi": new})
    record = {"checkpoint": "m", "threshold": 0.5, "metric_result": {"value": 10.0}}
    deployed = nightly.DeployedModel(tmp_path / "best_model.json", record, 0)
    drift = nightly.drift_of(RunLayout.for_run(tmp_path, "nightly_1"), changes, deployed)
    assert drift is not None and (drift.far_pct, drift.pass_rows, drift.drifted) == (50.0, 2, True)
    no_new = Changes(new_pool=frozenset({"p"}), appended={})
    assert nightly.drift_of(RunLayout.for_run(tmp_path, "nightly_1"), no_new, deployed) is None
