"""The plan an approval approves: what it covers, when its hash changes, and the hash itself, pinned."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any

import pytest

from aoi_pipeline.config import config_from_mapping
from aoi_pipeline.jobs.gpu import GpuInfo
from aoi_pipeline.pipeline.preflight import PreflightReport, StaticProbe, run_preflight
from aoi_pipeline.pipeline.trials import TrialOutcome

SECRET = "s3cr3t-Value-9f2c1d"
OTHER_SECRET = "another-s3cr3t-7e1b"


def test_the_plan_hash_is_stable_and_ignores_the_run_name(ws: Path, make_config, read) -> None:
    config = make_config(ws)
    first = run_preflight(config, run_name="run_20250101_000000", environ={}, probe=StaticProbe())
    again = run_preflight(config, run_name="run_20250101_000000", environ={}, probe=StaticProbe())
    renamed = run_preflight(config, run_name="run_20260202_121212", environ={}, probe=StaticProbe())

    assert first.plan_hash == again.plan_hash == renamed.plan_hash
    assert "run_2025" not in json.dumps(first.plan)
    assert "run_20260202_121212" in read.section(renamed, 1)


def test_the_plan_hash_changes_with_a_csv_or_a_budget(ws: Path, preflight) -> None:
    before = preflight(ws).plan_hash

    more_trials = preflight(ws, phase1={"recommendations": 4}).plan_hash
    training = ws / "train" / "base" / "training_set.csv"
    header, *rows = training.read_text(encoding="utf-8").splitlines()
    training.write_text("\n".join([header, *reversed(rows)]) + "\n", encoding="utf-8")
    reordered = preflight(ws)

    assert reordered.ok
    assert len({before, more_trials, reordered.plan_hash}) == 3


def test_a_changed_mining_pool_keeps_the_plan_hash(ws: Path, preflight) -> None:
    before = preflight(ws, deft={"max_iterations": 1})
    pool = ws / "augmentation" / "mining_pool" / "mining_pool.csv"
    lines = pool.read_text(encoding="utf-8").splitlines()
    pool.write_text("\n".join(lines[:-1]) + "\n", encoding="utf-8")  # one row fewer: the pool changed

    after = preflight(ws, deft={"max_iterations": 1})

    assert before.ok and after.ok
    assert after.plan_hash == before.plan_hash


def test_the_plan_covers_spec_csvs_spaces_images_and_gpus(ws: Path, preflight) -> None:
    plan = preflight(ws, probe=StaticProbe(gpu_list=[GpuInfo("NVIDIA L40S", 44.99)])).plan

    csv = ws / "kpi" / "testing_set.csv"
    assert plan["dataset_sha256"]["kpi"] == hashlib.sha256(csv.read_bytes()).hexdigest()
    assert plan["kpi_target"] == "FAR < 5% at Recall=100%"
    assert len(plan["base_spec_sha256"]) == 64
    phase1_keys = {param["key"] for param in plan["search_spaces"]["phase1"]}
    phase3_keys = {param["key"] for param in plan["search_spaces"]["phase3"]}
    # A warm-started Phase 3 must keep the architecture of the checkpoint it loads.
    assert "model.classify.learnable_difference_modules" in phase1_keys - phase3_keys
    assert plan["gpus"] == {"count": 1, "per_job": 1}
    # The default DEFT iteration runs SDG and the embedding job too.
    assert plan["platform"] == "local" and set(plan["images"]) == {"train", "inference", "embed", "sdg"}


def test_the_base_spec_hash_follows_the_spec_overrides(ws: Path, preflight) -> None:
    plain = preflight(ws).plan["base_spec_sha256"]
    tuned = preflight(ws, spec_overrides=["train.optim.lr=0.001"]).plan["base_spec_sha256"]

    assert plain != tuned


def test_secret_values_appear_nowhere_and_do_not_change_the_plan_hash(ws: Path, preflight, read) -> None:
    def run(secret: str) -> PreflightReport:
        environ = {"MODEL_TOKEN": secret, "SLURM_USER": secret, "SSH_KEY_PATH": secret, "NGC_KEY": secret}
        return preflight(ws, platform="slurm", credentials=["MODEL_TOKEN"], environ=environ)

    report = run(SECRET)
    other = run(OTHER_SECRET)

    outputs = [
        report.markdown(),
        report.text(),
        json.dumps(report.plan),
        repr(report.blockers),
        repr(report.warnings),
        repr(report.sections),
    ]
    assert all(SECRET not in output for output in outputs)
    assert "| MODEL_TOKEN | required by the pipeline config (credentials) | SET |" in read.section(report, 2)
    assert report.plan_hash == other.plan_hash


# ------------------------------------------------------------------------------------------- estimate


def test_the_compute_estimate_shows_unknown_without_minutes(ws: Path, preflight, read) -> None:
    estimate = read.section(preflight(ws), 8)

    assert "N1 × t_rec + M × t_iter + N3 × t_rec" in estimate
    assert "= unknown" in estimate and "estimates.minutes_per_recommendation" in estimate
    assert " min of compute" not in estimate


def test_the_compute_estimate_adds_the_known_terms(ws: Path, preflight, read) -> None:
    estimates = {"minutes_per_recommendation": 10, "minutes_per_iteration": 30}
    phase3, deft = {"recommendations": 2}, {"max_iterations": 0}

    both = preflight(ws, estimates=estimates, phase1={"recommendations": 3}, phase3=phase3, deft=deft)
    no_phase1 = preflight(ws, estimates=estimates, phase1={"enabled": False}, phase3=phase3, deft=deft)

    # 3 x 10 + (0 iterations + 1 baseline stage) x 30 + 2 x 10 = 80; without Phase 1: 0 + 30 + 20 = 50.
    assert "= 80 min of compute" in read.section(both, 8)
    assert "= 50 min of compute" in read.section(no_phase1, 8)


def test_the_wall_clock_divides_the_trials_over_the_usable_slots(ws: Path, preflight, read) -> None:
    two = StaticProbe(gpu_list=[GpuInfo("NVIDIA L40S", 44.99)] * 2)
    estimates = {"minutes_per_recommendation": 10, "minutes_per_iteration": 30}
    phase1, phase3 = {"recommendations": 4, "parallel": 2}, {"recommendations": 2, "parallel": 1}

    report = preflight(ws, probe=two, estimates=estimates, phase1=phase1, phase3=phase3, deft={"max_iterations": 0})

    # 4 x 10 + 1 x 30 + 2 x 10 = 90 of compute; two slots run Phase 1 in 2 rounds: 20 + 30 + 20 = 70.
    assert "= 90 min of compute" in read.section(report, 8)
    assert "about 70 min" in read.section(report, 8)


# ------------------------------------------------------------------------------------------ pinned hash

# Computed once by the pre-flight as it was before it became a package. A run directory approved with one of
# these plans must still resume, so these hashes change only with a deliberate change to what a plan holds
# (then every earlier approval needs a new one: say so in the change). Changed when the plan gained the KPI
# split, the pool budget and the calibrated mining cut, and when `deft.min_similarity`'s default became 0
# with the difference-region mining descriptor (a plan that relied on the old default needs a new approval).
PINNED_PLAN_HASHES = {
    "local": "a529a0848254b71a",
    "docker": "e719209ac352cba5",
    "slurm": "3f3b689aef76ab2a",
}


class _PinnedProbe(StaticProbe):
    def image_present(self, image: str) -> bool | None:
        return True


def _pinned_plan(platform: str) -> PreflightReport:
    data: dict[str, Any] = {
        "workspace": "/nonexistent/aoi-pinned-workspace",
        "kpi_target": "FAR < 3% at Recall=99%",
        "spec_overrides": ["train.optim.lr=0.0005"],
        "gpus": "auto" if platform == "slurm" else 2,
        "phase1": {
            "batch_size": 4,
            "recommendations": 3,
            "search_space": {"train.optim.lr": {"low": 1e-5, "high": 1e-2, "log": True}},
        },
        "deft": {"max_iterations": 2},
        "phase3": {"batch_size": 4, "parallel": 2},
        "credentials": ["MODEL_TOKEN"],
        "platform": platform,
    }
    probe = _PinnedProbe(gpu_list=[GpuInfo("NVIDIA L40S", 44.99)] * 2, name="pinned-host")
    return run_preflight(config_from_mapping(data), run_name="run_20250101_000000", environ={}, probe=probe)


@pytest.mark.parametrize("platform", sorted(PINNED_PLAN_HASHES))
def test_the_plan_hash_of_a_fixed_plan_is_pinned(platform: str) -> None:
    report = _pinned_plan(platform)

    assert report.plan["base_spec_sha256"] is not None
    assert set(report.plan["search_spaces"]) == {"phase1", "phase3"}
    assert report.plan_hash == PINNED_PLAN_HASHES[platform], json.dumps(report.plan, indent=1, sort_keys=True)


def test_a_gpu_hour_budget_shows_the_recommendations_it_implies(ws: Path, preflight, read) -> None:
    estimates = {"minutes_per_recommendation": 12, "minutes_per_iteration": 30}
    phase1 = {"max_gpu_hours": 2.0, "pruner": "median", "pruner_warmup_epochs": 3, "num_epochs": 10}
    report = preflight(ws, estimates=estimates, phase1=phase1, phase3={"enabled": False})

    estimate = read.section(report, 8)
    # 2 GPU-hours at 12 min per recommendation and one GPU (or CPU) per trial: 10 recommendations.
    assert "N1 = 10 (Phase 1 recommendations implied by max_gpu_hours 2" in estimate
    assert "10 × 12 min" in estimate
    phase1_text = read.section(report, 5)
    assert "2 GPU-hours" in phase1_text and "median rule" in phase1_text and "from epoch 3" in phase1_text
    unknown = read.section(preflight(ws, phase1={"max_gpu_hours": 2.0}), 8)
    assert "N1 = unknown" in unknown and "estimates.minutes_per_recommendation" in unknown


def test_pruning_and_a_gpu_hour_budget_change_the_plan_hash(ws: Path, preflight) -> None:
    hashes = {
        preflight(ws).plan_hash,
        preflight(ws, phase1={"pruner": "median"}).plan_hash,
        preflight(ws, phase1={"max_gpu_hours": 1.0}).plan_hash,
    }
    assert len(hashes) == 3


def test_without_estimates_an_earlier_runs_measured_trials_give_the_minutes_per_recommendation(
    ws: Path, preflight, read
) -> None:
    earlier = ws / "results" / "run_20200101_000000" / "phase1" / "trial_000"
    earlier.mkdir(parents=True)
    (earlier / "spec.yaml").write_text("train:\n  num_epochs: 4\n", encoding="utf-8")
    outcome = TrialOutcome(
        number=0,
        params={},
        state="complete",
        far_pct=3.0,
        recall_pct=100.0,
        threshold=0.5,
        val_loss=0.1,
        checkpoint=None,
        train_spec_path=earlier / "spec.yaml",
        inference_csv=None,
        duration_s=240.0,  # 60 s per epoch
    )
    (earlier / "trial.json").write_text(json.dumps(outcome.to_record()), encoding="utf-8")

    estimate = read.section(preflight(ws, phase1={"num_epochs": 3}, deft={"max_iterations": 0}), 8)

    # 60 s per epoch x 3 epochs = 3 min per recommendation, measured in the earlier run
    assert "t_rec = 3 min (measured in run_20200101_000000, scaled to this config's epochs" in estimate
    assert "t_iter = unknown" in estimate


def test_the_plan_shows_the_mining_rules_and_they_change_the_plan_hash(ws: Path, preflight) -> None:
    default = preflight(ws)
    old = preflight(ws, deft={"mining_rank": "similarity", "mining_label_balance": "none", "mining_explore_share": 0})
    capped = preflight(ws, deft={"mining_max_per_board": 3})
    text = {name: "\n".join(line for s in r.sections for line in s.lines) for name, r in (("d", default), ("o", old))}
    assert "the neighbours the model gets most wrong first" in text["d"] and "25% random pool rows" in text["d"]
    assert "highest similarity over all targets; any labels" in text["o"] and "random pool rows" not in text["o"]
    assert "at most 3 per board" in "\n".join(line for s in capped.sections for line in s.lines)
    assert len({default.plan_hash, old.plan_hash, capped.plan_hash}) == 3
