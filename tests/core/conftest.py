"""Fixtures for the core tests: run states built in tmp_path, a directory snapshot, a synthetic workspace with SDG
outputs, and report runs.

The workspace builder (`ws`) is the one every test shares, in tests/conftest.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import sys
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

# The builders shared by several test modules live beside this file; test modules import them by module name.
sys.path.insert(0, str(Path(__file__).parent))

from report_run import BEST_MODEL, HOSTILE, Run
from sdg_workspace import build_sdg_workspace

from aoi_pipeline.core.state import STATE_FILE, StageCommit, commit_stage, init_state
from aoi_pipeline.errors import StateError


@pytest.fixture
def snapshot() -> Callable[[Path], dict[str, tuple[int, str]]]:
    """A function returning {relative path: (mtime_ns, sha256)} for every entry under a directory."""

    def take(root: Path) -> dict[str, tuple[int, str]]:
        result = {}
        for path in sorted(root.rglob("*")):
            digest = hashlib.sha256(path.read_bytes()).hexdigest() if path.is_file() else "dir"
            result[str(path.relative_to(root))] = (path.stat().st_mtime_ns, digest)
        return result

    return take


# ---------------------------------------------------------------------------------------------------------
# The run state: a small driver with artifacts on disk plus the commits a flow would make

FAR_CONTRACT = {
    "name": "far_pct",
    "display_name": "FAR",
    "operator": "<",
    "target": 5.0,
    "unit": "%",
    "evaluator": {"type": "builtin", "id": "far_at_recall", "parameters": {"recall_target_pct": 100.0}},
    "constraints": [{"name": "recall_pct", "display_name": "Recall", "operator": ">=", "target": 100.0, "unit": "%"}],
}
T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)


class StateRun:
    """A run state in tmp_path, valid artifacts per stage, and the commits a flow would make."""

    FAR_CONTRACT = FAR_CONTRACT

    def __init__(
        self, tmp_path: Path, *, max_iterations: int = 2, contract: dict | None = None, target: str = ""
    ) -> None:
        self.rd = tmp_path / "ws" / "results" / "run_20260301_080000"
        self.clock = T0
        self.state = init_state(
            self.rd,
            kpi_target=target or "FAR < 5% at Recall=100%",
            metric_contract=contract or FAR_CONTRACT,
            max_iterations=max_iterations,
            config={"num_epochs": 10, "batch_size": 16},
            now=self.clock,
        )

    @property
    def path(self) -> Path:
        return self.rd / STATE_FILE

    def file(self, relative: str, content: str | bytes = "x") -> str:
        path = self.rd / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def commit(self, label: str, stage: str, fields: dict[str, Any] | None = None, **kwargs: Any) -> dict:
        self.clock += timedelta(minutes=1)
        commit = StageCommit(
            iter_label=label,
            stage=stage,
            status=kwargs.pop("status", "ok"),
            summary=kwargs.pop("summary", f"{stage} done"),
            duration_sec=kwargs.pop("duration_sec", 12.5),
            fields=fields or {},
            **kwargs,
        )
        self.state = commit_stage(self.rd, commit, now=self.clock)
        return self.state

    # one helper per stage, with valid artifacts
    def train_fields(self, label: str) -> dict[str, Any]:
        return {
            "best_ckpt_path": self.file(f"{label}/train/model_epoch_010_step_00100.pth"),
            "training_spec": self.file(f"{label}/spec.yaml", "train: {}\n"),
            "best_ckpt_kind": "best_val",
            "val_loss": 0.12,
        }

    def evaluate_fields(self, label: str, far: float, *, recall: float = 100.0, **extra: Any) -> dict[str, Any]:
        result = {
            "name": "far_pct",
            "value": far,
            "unit": "%",
            "threshold": 0.31,
            "constraints": {"recall_pct": recall},
        }
        result.update(extra)
        return {
            "metric_result": self.file(f"{label}/inference/best_val/metric_result.json", json.dumps(result)),
            "best_ckpt_path": str(self.rd / label / "train" / "model_epoch_010_step_00100.pth"),
            "inference_csv": self.file(f"{label}/inference/best_val/inference.csv", "input_path,siamese_score\n"),
        }

    def rca_fields(self, label: str) -> dict[str, Any]:
        return {
            "rca_gaps_csv": self.file(f"{label}/rca_results/2026-03-01_080000/kpi_gaps.csv", "label,missed\n"),
            "rca_threshold": 0.3,
            "rca_target_defects": ["missing", "short"],
        }

    def routing_fields(self, label: str) -> dict[str, Any]:
        return {
            "routing_mining_csv": self.file(f"{label}/routing_results/t/mining_gaps.csv", "input_path\n"),
            "routing_anomalygen_csv": self.file(f"{label}/routing_results/t/anomalygen_gaps.csv", "input_path\n"),
        }

    def anomalygen_fields(self, label: str, allocation: Any = None) -> dict[str, Any]:
        allocation = {"PCB+missing": 7, "PCB+bridge": 13} if allocation is None else allocation
        return {
            "anomalygen_sdg_csv": self.file(f"{label}/anomalygen/sdg/SDG_result.csv", "image\n"),
            "anomalygen_allocation_json": self.file(f"{label}/anomalygen/sdg/allocation.json", json.dumps(allocation)),
        }

    def mining_fields(self, label: str) -> dict[str, Any]:
        base = f"{label}/mining_results/t"
        return {
            "mining_mined_csv": self.file(f"{base}/mined.csv", "input_path\n"),
            "mining_candidate_csv": self.file(f"{base}/mined_candidates.csv", "pool_row\n"),
            "mining_summary": self.file(f"{base}/knn_summary.csv", "candidate_count\n3\n"),
            "mining_history": self.file("mining_history.json", '{"version": 1}'),
            "mining_history_summary": self.file(f"{base}/mining_history_summary.json", "{}"),
            "mining_target_embeddings": self.file(f"{base}/target_embeddings.parquet", b"PAR1"),
            "mining_source_embeddings": self.file(f"{base}/source_embeddings.parquet", b"PAR1"),
            "mining_target_log": self.file(f"{base}/target_embeddings.log", "Execution status: PASS\n"),
            "mining_source_log": self.file(f"{base}/source_embeddings.log", "Execution status: PASS\n"),
            "mining_knn_log": self.file(f"{base}/nearest_neighbors.log", "Execution status: PASS\n"),
            "mining_mined_count": 3,
        }

    def merge_fields(self, label: str, report: dict | None = None) -> dict[str, Any]:
        report = report or {
            "rows_checked": 230,
            "missing_file_count": 0,
            "train_val_leakage_overlap_count": 0,
        }
        return {
            "combined_training_csv": self.file(f"{label}/dataset/train_combined_{label}.csv", "input_path\n"),
            "provenance_csv": self.file(f"{label}/dataset/train_combined_{label}_provenance.csv", "source\n"),
            "merge_validation_report": self.file(f"{label}/dataset/merge_validation.json", json.dumps(report)),
        }

    def stop_fields(self, reason: str) -> dict[str, Any]:
        return {
            "stop_reason": reason,
            "best_model_json": self.file("best_model.json", "{}"),
            "inference_spec": self.file("best_model_inference_spec.yaml", "inference: {}\n"),
        }

    # whole phases
    def baseline(self, far: float = 20.0, *, rca: bool = True) -> None:
        self.commit("baseline", "train", self.train_fields("baseline"))
        self.commit("baseline", "evaluate", self.evaluate_fields("baseline", far))
        if rca:
            self.commit("baseline", "rca", self.rca_fields("baseline"))

    def iteration_until_merge(self, label: str) -> None:
        self.commit(label, "routing", self.routing_fields(label))
        self.commit(label, "anomalygen", self.anomalygen_fields(label))
        self.commit(label, "data_mining", self.mining_fields(label))
        self.commit(label, "data_merge", self.merge_fields(label))

    def iteration(self, label: str, far: float) -> None:
        self.iteration_until_merge(label)
        self.commit(label, "train", self.train_fields(label))
        self.commit(label, "evaluate", self.evaluate_fields(label, far))

    def refused(self, label: str, stage: str, fields: dict | None = None, **kwargs: Any) -> StateError:
        """Assert the commit is refused with a StateError and the state file is byte-for-byte unchanged."""
        before = self.path.read_bytes()
        listing = sorted(os.listdir(self.rd))
        with pytest.raises(StateError) as caught:
            self.commit(label, stage, fields, **kwargs)
        assert self.path.read_bytes() == before
        assert sorted(os.listdir(self.rd)) == listing
        assert str(self.path) in str(caught.value)
        return caught.value


@pytest.fixture
def make_run() -> type[StateRun]:
    """`make_run(tmp_path, max_iterations=..., contract=..., target=...)` starts a run state in tmp_path."""
    return StateRun


# ---------------------------------------------------------------------------------------------------------
# A synthetic workspace with SDG outputs (SDG ingestion, assembly and merge validation)


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A synthetic workspace with procedural SDG outputs for iterations 1 and 2 (built once, copied per test)."""
    return build_sdg_workspace(tmp_path_factory.mktemp("template") / "ws")


@pytest.fixture
def workspace(template: Path, tmp_path: Path) -> Path:
    root = tmp_path / "ws"
    shutil.copytree(template, root)
    return root


# ---------------------------------------------------------------------------------------------------------
# Report runs: real states built through init_state + commit_stage (tests/core/report_run.py)


@pytest.fixture
def complete_run(tmp_path: Path) -> Run:
    """Baseline and two iterations: FAR 20% -> 12% (latest checkpoint wins) -> 4%, the target is met."""
    run = Run(tmp_path / "complete")
    run.train("baseline")
    run.evaluate("baseline", 20.0, threshold=0.5)
    run.rca("baseline", ["short", "open"])
    run.until_merge("iter1", mined=35)
    run.train("iter1")
    run.evaluate("iter1", 12.0, kind="latest", threshold=0.375)
    run.rca("iter1", ["open"])
    run.until_merge("iter2", mined=25)
    run.train("iter2")
    run.evaluate("iter2", 4.0, threshold=0.1875)
    run.stop("metric_met", BEST_MODEL)
    return run


@pytest.fixture
def failed_run(tmp_path: Path) -> Run:
    """Baseline evaluated, then iter1's SDG stage fails with a summary that holds markup."""
    run = Run(tmp_path / "failed")
    run.train("baseline")
    run.evaluate("baseline", 20.0)
    run.rca("baseline", ["short"])
    run.commit(
        "iter1",
        "routing",
        {
            "routing_mining_csv": run.file("iter1/routing/mining.csv", "x\n"),
            "routing_anomalygen_csv": run.file("iter1/routing/sdg.csv", "x\n"),
        },
    )
    run.commit("iter1", "anomalygen", {"job_rc": 3}, status="error", summary=HOSTILE)
    return run
