"""End to end on a real Prefect server: run, pause on the plan, approve from the CLI, complete with a handoff."""

from __future__ import annotations

import json
import os
import subprocess
import time
from pathlib import Path

import pytest
import yaml

from aoi_pipeline.demo import demo_config
from aoi_pipeline.synth.workspace import SynthSpec, write_workspace

# A whole pipeline run through a real server and worker: minutes on a loaded two-core machine.
pytestmark = [pytest.mark.integration, pytest.mark.slow, pytest.mark.timeout(900)]


def _config(tmp_path: Path) -> Path:
    write_workspace(tmp_path / "workspace", SynthSpec(boards=10, size=32, seed=5))
    config = demo_config(Path("workspace"))
    config["spec_overrides"] = [
        "dataset.classify.image_width=32",
        "dataset.classify.image_height=32",
        "dataset.classify.workers=0",
    ]
    small = {"recommendations": 2, "num_epochs": 2, "batch_size": 8}
    config["phase1"].update(small)
    config["phase3"].update({**small, "recommendations": 1})
    config["deft"]["num_epochs"] = 2
    path = tmp_path / "pipeline.yaml"
    path.write_text(yaml.safe_dump(config), encoding="utf-8")
    return path


def _approve_when_paused(command: list[str], env: dict[str, str], run: subprocess.Popen) -> str:
    deadline = time.monotonic() + 240
    while time.monotonic() < deadline:
        assert run.poll() is None, f"the run ended before approval: {run.communicate()[0][-3000:]}"
        answer = subprocess.run(
            [*command, "approve", "--latest", "--yes", "--reviewer", "ci", "--comment", "end-to-end"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        if answer.returncode == 0:
            return answer.stdout
        assert "waiting for approval" in answer.stderr, answer.stderr
        time.sleep(2)
    raise AssertionError("the run never paused for approval")


def test_run_pauses_until_approved_on_the_cli_then_hands_off(
    prefect_server_url: str, aoi_command: list[str], tmp_path: Path
) -> None:
    config = _config(tmp_path)
    env = {**os.environ, "PREFECT_API_URL": prefect_server_url, "PYTHONUNBUFFERED": "1"}
    run = subprocess.Popen(
        [*aoi_command, "run", "--config", str(config), "--run-name", "run_e2e"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        approved = _approve_when_paused(aoi_command, env, run)
        output, _ = run.communicate(timeout=900)
    finally:
        if run.poll() is None:
            run.kill()
    assert run.returncode == 0, output[-4000:]
    assert "Approved run_e2e" in approved
    assert "Run complete" in output
    run_dir = tmp_path / "workspace" / "results" / "run_e2e"
    best = json.loads((run_dir / "best_model.json").read_text())
    assert Path(best["checkpoint"]).is_file()
    approval = json.loads((run_dir / "approval.json").read_text())
    assert (approval["decision"], approval["reviewer"], approval["comment"]) == (
        "approve",
        "ci",
        "end-to-end",
    )
    status = subprocess.run([*aoi_command, "status", str(run_dir)], env=env, capture_output=True, text=True)
    assert "handoff      complete" in status.stdout, status.stdout
