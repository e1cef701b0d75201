"""The `tao-job` flow: one job record in, the launcher's result record out (what a work pool runs)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

FAKE_RUNTIME = Path(__file__).resolve().parents[1] / "fake_runtime.py"


@pytest.fixture
def fake_launcher(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """The flow's launcher runs the fake runtime on the CPU; returns the file listing its calls."""
    import flows.tao_job
    from aoi_pipeline.jobs.gpu import GpuSlots
    from aoi_pipeline.jobs.local import LocalLauncher

    calls = tmp_path / "calls.jsonl"
    monkeypatch.setenv("FAKE_RUNTIME_CALLS", str(calls))

    def launcher(**settings: Any) -> LocalLauncher:
        return LocalLauncher(
            gpu_slots=GpuSlots([]),
            command_resolver=lambda job: [sys.executable, str(FAKE_RUNTIME), job.action],
            **settings,
        )

    monkeypatch.setattr(flows.tao_job, "LocalLauncher", launcher)
    return calls


def _job(tmp_path: Path) -> dict[str, Any]:
    from aoi_pipeline.jobs.job import TaoJob

    results = tmp_path / "job" / "train"
    spec = {"train": {"results_dir": str(results), "num_epochs": 2}}
    return TaoJob(
        name="phase1-trial000-train", action="train", image="tao:pyt", spec=spec, results_dir=results
    ).to_record()


def test_the_job_record_runs_and_its_result_record_comes_back(
    prefect_server: None, fake_launcher: Path, tmp_path: Path
) -> None:
    from flows.tao_job import tao_job

    record = _job(tmp_path)
    result = tao_job(record)
    assert result["name"] == "phase1-trial000-train"
    assert (result["status"], result["exit_code"], result["failure"]) == ("success", 0, None)
    assert Path(result["log_path"]).is_file()
    results = Path(record["results_dir"])
    assert sorted(path.name for path in results.glob("model_epoch_*.pth")) == [
        "model_epoch_000_step_00010.pth",
        "model_epoch_001_step_00020.pth",
    ]
    assert [json.loads(line)["action"] for line in fake_launcher.read_text().splitlines()] == ["train"]


def test_a_failing_program_fails_the_run_and_its_job_record_says_why(
    prefect_server: None, fake_launcher: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from aoi_pipeline.errors import ProgramJobError
    from flows.tao_job import tao_job

    monkeypatch.setenv("FAKE_RUNTIME_FAIL", "train")
    record = _job(tmp_path)
    with pytest.raises(ProgramJobError):
        tao_job(record)
    result = json.loads((Path(record["results_dir"]) / "job.json").read_text())["result"]
    assert result["status"] == "failed" and result["exit_code"] != 0
    assert result["failure"]["kind"] == "program"
