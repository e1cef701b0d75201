"""A DEFT run state built through init_state + commit_stage for the report tests, and a reader of the page.

`tests/core/conftest.py` turns `Run` into the `complete_run` and `failed_run` fixtures; the test modules of
`core.report`, `core.report_view`, `core.report_charts` and `core.report_html` read the rendered page back
with `_Page`, `_section`, `_visible` and `_table_rows`.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

from aoi_pipeline.core.state import StageCommit, commit_stage, init_state, read_state

FAR_CONTRACT = {
    "name": "far_pct",
    "display_name": "FAR",
    "operator": "<",
    "target": 5.0,
    "unit": "%",
    "evaluator": {"type": "builtin", "id": "far_at_recall", "parameters": {"recall_target_pct": 99.0}},
    "constraints": [{"name": "recall_pct", "display_name": "Recall", "operator": ">=", "target": 99.0, "unit": "%"}],
}

T0 = datetime(2026, 3, 1, 8, 0, 0, tzinfo=UTC)

HOSTILE = "<script>alert('x')</script> & leakage"

SECTIONS = ("run", "kpi", "iterations", "confirm-split", "growth", "durations", "rca", "augmentation", "handoff")


class Run:
    def __init__(self, tmp_path: Path, *, max_iterations: int = 2, contract: dict | None = None) -> None:
        self.rd = tmp_path / "ws" / "results" / "run_20260301_080000"
        self.clock = T0
        self.durations: list[float] = []
        self.contract = contract or FAR_CONTRACT
        init_state(
            self.rd,
            kpi_target="FAR < 5% at Recall=99%" if contract is None else "Quality score >= 0.9",
            metric_contract=self.contract,
            max_iterations=max_iterations,
            config={"num_epochs": 10},
            now=self.clock,
        )

    def file(self, relative: str, content: str | bytes = "x") -> str:
        path = self.rd / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content.encode() if isinstance(content, str) else content)
        return str(path)

    def commit(self, label: str, stage: str, fields: dict[str, Any] | None = None, **kwargs: Any) -> None:
        self.clock += timedelta(minutes=1)
        # Every commit gets its own duration, so the bar chart's proportions can be checked.
        duration = kwargs.pop("duration_sec", 10.0 + 7.5 * len(self.durations))
        self.durations.append(duration)
        commit = StageCommit(
            label,
            stage,
            kwargs.pop("status", "ok"),
            kwargs.pop("summary", f"{stage} of {label} done"),
            duration,
            fields or {},
            **kwargs,
        )
        commit_stage(self.rd, commit, now=self.clock)

    def train(self, label: str) -> None:
        self.commit(
            label,
            "train",
            {
                "best_ckpt_path": self.file(f"{label}/train/model_epoch_010_step_00100.pth"),
                "training_spec": self.file(f"{label}/spec.yaml", "train: {}\n"),
                "best_ckpt_kind": "best_val",
            },
        )

    def evaluate(self, label: str, far: float, *, kind: str = "best_val", threshold: float = 0.25) -> None:
        result = {"name": self.contract["name"], "value": far, "unit": self.contract["unit"]}
        result["threshold"] = threshold
        result["constraints"] = {"recall_pct": 99.5} if self.contract is FAR_CONTRACT else {}
        self.commit(
            label,
            "evaluate",
            {
                "metric_result": self.file(f"{label}/inference/{kind}/metric_result.json", json.dumps(result)),
                "best_ckpt_path": str(self.rd / label / "train" / "model_epoch_010_step_00100.pth"),
                "inference_csv": self.file(f"{label}/inference/{kind}/inference.csv", "input_path\n"),
            },
        )

    def rca(self, label: str, defects: list[str]) -> None:
        self.commit(
            label,
            "rca",
            {
                "rca_gaps_csv": self.file(f"{label}/rca_results/t/kpi_gaps.csv", "label\n"),
                "rca_threshold": 0.4375,
                "rca_target_defects": defects,
            },
        )

    def until_merge(self, label: str, mined: int) -> None:
        self.commit(
            label,
            "routing",
            {
                "routing_mining_csv": self.file(f"{label}/routing/mining.csv", "x\n"),
                "routing_anomalygen_csv": self.file(f"{label}/routing/sdg.csv", "x\n"),
            },
        )
        self.commit(
            label,
            "anomalygen",
            {
                "anomalygen_sdg_csv": self.file(f"{label}/anomalygen/sdg/SDG_result.csv", "image\n"),
                "anomalygen_allocation_json": self.file(
                    f"{label}/anomalygen/sdg/allocation.json", json.dumps({"PCB+short": 11, "PCB+open": 9})
                ),
            },
        )
        base = f"{label}/mining"
        log = "Execution status: PASS\n"
        self.commit(
            label,
            "data_mining",
            {
                "mining_mined_csv": self.file(f"{base}/mined.csv", "x\n"),
                "mining_candidate_csv": self.file(f"{base}/candidates.csv", "x\n"),
                "mining_summary": self.file(f"{base}/knn_summary.csv", "x\n"),
                "mining_history": self.file("mining_history.json", "{}"),
                "mining_history_summary": self.file(f"{base}/history_summary.json", "{}"),
                "mining_target_embeddings": self.file(f"{base}/target.npy", b"N"),
                "mining_source_embeddings": self.file(f"{base}/source.npy", b"N"),
                "mining_target_log": self.file(f"{base}/target.log", log),
                "mining_source_log": self.file(f"{base}/source.log", log),
                "mining_knn_log": self.file(f"{base}/knn.log", log),
                "mining_mined_count": mined,
            },
        )
        report = {"missing_file_count": 0, "train_val_leakage_overlap_count": 0}
        self.commit(
            label,
            "data_merge",
            {
                "combined_training_csv": self.file(f"{label}/dataset/train.csv", "input_path\n"),
                "provenance_csv": self.file(f"{label}/dataset/provenance.csv", "source\n"),
                "merge_validation_report": self.file(f"{label}/dataset/merge_validation.json", json.dumps(report)),
            },
        )

    def stop(self, reason: str, best_model: dict[str, Any]) -> None:
        self.commit(
            self.last_label,
            "loop_stop",
            {
                "stop_reason": reason,
                "best_model_json": self.file("best_model.json", json.dumps(best_model)),
                "inference_spec": self.file("best_model_inference_spec.yaml", "inference: {}\n"),
            },
        )

    last_label = "iter2"

    @property
    def state(self) -> dict[str, Any]:
        return read_state(self.rd)


BEST_MODEL = {
    "checkpoint": "/ws/results/run_20260301_080000/iter2/train/model_epoch_010_step_00100.pth",
    "threshold": 0.1875,
    "iteration": "iter2",
    "metric_result": {"name": "far_pct", "value": 4.0, "unit": "%", "passed": True},
    "metric_contract": FAR_CONTRACT,
    "training_spec": "/ws/results/run_20260301_080000/iter2/spec.yaml",
    "far_pct": 4.0,
}


EXTRAS = {
    "training_rows_by_source": {
        "baseline": {"base": 480},
        "iter1": {"base": 480, "sdg": 20, "mined": 35},
        "iter2": {"base": 480, "sdg": 40, "mined": 60},
    },
    "rca_gaps": {
        "baseline": [
            {"label": "short", "missed": 7, "forced_far_pct": 31.25, "lowest": 0.0625},
            {"label": "open", "missed": 2, "forced_far_pct": None, "lowest": 0.5},
        ],
        "iter1": [{"label": "open", "missed": 1, "forced_far_pct": 14.5, "lowest": 0.125}],
    },
    "sdg_and_mining": {"iter1": {"mining_candidates": 90, "mining_below_min_similarity": 55}},
    "pool_share_used_pct": 6.0,
}


class _Page(HTMLParser):
    """Collects tags and attributes, checks that every element opened is closed in order."""

    VOID = frozenset({"meta", "br", "hr", "img", "input", "link"})

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.errors: list[str] = []
        self.elements: list[tuple[str, dict[str, str | None]]] = []
        self.texts: list[str] = []
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.elements.append((tag, dict(attrs)))

    def handle_endtag(self, tag: str) -> None:
        if not self.stack or self.stack[-1] != tag:
            self.errors.append(f"</{tag}> closes {self.stack[-1:] or 'nothing'}")
        else:
            self.stack.pop()

    def handle_data(self, data: str) -> None:
        self.texts.append(data)

    def all(self, tag: str, **wanted: str) -> list[dict[str, str | None]]:
        return [
            attrs
            for name, attrs in self.elements
            if name == tag and all(attrs.get(key.replace("_", "-")) == value for key, value in wanted.items())
        ]

    def section_ids(self) -> list[str]:
        return [str(attrs["id"]) for name, attrs in self.elements if name in ("section", "header") and "id" in attrs]


def _section(text: str, section_id: str) -> str:
    match = re.search(rf'<(section|header) id="{section_id}"[^>]*>(.*?)</\1>', text, re.S)
    assert match, f"section {section_id} missing"
    return match.group(2)


def _visible(fragment: str) -> str:
    """The text a reader sees in a fragment, entities decoded."""
    return " ".join(part.strip() for part in _Page(fragment).texts if part.strip())


def _table_rows(fragment: str) -> list[list[str]]:
    rows = []
    for row in re.findall(r"<tr[^>]*>(.*?)</tr>", fragment, re.S):
        rows.append([_visible(cell) for cell in re.findall(r"<t[dh]>(.*?)</t[dh]>", row, re.S)])
    return rows
