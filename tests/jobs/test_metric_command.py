"""Tests of the command metric evaluator: the argv it runs, and how a failing or wrong evaluator is reported."""

from __future__ import annotations

import json
import stat
import sys
from pathlib import Path

import pytest

from aoi_pipeline.core.metric_contract import Evaluator
from aoi_pipeline.core.metric_result import evaluate_inference_csv
from aoi_pipeline.core.metric_target import parse_target
from aoi_pipeline.errors import MetricContractError
from aoi_pipeline.jobs.metric_command import run_evaluator_command


def write_inference_csv(path: Path) -> Path:
    # PASS 0.1, 0.6, 0.8, 0.3; defects 0.5, 0.9 -> at 100 % recall the cut is 0.5 and 2 of 4 PASS are flagged.
    rows = ["PASS,0.1", "open,0.5", "PASS,0.6", "short,0.9", "PASS,0.8", "pass,0.3"]
    path.write_text("label,siamese_score\n" + "\n".join(rows) + "\n")
    return path


def executable(path: Path, body: str) -> Path:
    path.write_text(f"#!{sys.executable}\n{body}")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return path


EVALUATOR_SCRIPT = """
import json, sys
args = sys.argv[1:]
csv_path = args[args.index("--inference-csv") + 1]
out = args[args.index("--output-json") + 1]
rows = open(csv_path).read().splitlines()[1:]
cost = sum(1 for row in rows if row.startswith("PASS") and float(row.split(",")[1]) >= 0.5) / 10
json.dump({"name": "escape_cost", "value": cost, "unit": "cost/board", "constraints": {"recall_pct": 100.0},
           "diagnostics": {"argv": args}}, open(out, "w"))
"""


def test_command_evaluator_runs_with_the_documented_argv(tmp_path: Path) -> None:
    script = executable(tmp_path / "evaluate_cost.py", EVALUATOR_SCRIPT)
    csv_path = write_inference_csv(tmp_path / "inference.csv")
    evaluator = Evaluator("command", path=str(script), args=("--policy", "p.json"))
    contract = parse_target("Escape cost <= 0.25 cost/board at Recall=100%", evaluator=evaluator)
    output = tmp_path / "out" / "metric_result.json"
    result = evaluate_inference_csv(contract, csv_path, output_json=output, run_command=run_evaluator_command)
    assert (result.name, result.value, result.passed) == ("escape_cost", 0.2, True)
    argv = result.diagnostics["argv"]
    assert argv[:3] == ["--policy", "p.json", "--inference-csv"]
    assert argv[3] == str(csv_path.resolve()) and Path(argv[3]).is_absolute()
    assert argv[4] == "--output-json" and Path(argv[5]).is_absolute()
    assert json.loads(output.read_text())["value"] == 0.2


def test_a_failing_command_evaluator_reports_its_status_and_stderr(tmp_path: Path) -> None:
    script = executable(
        tmp_path / "broken.py", "import sys\nsys.stderr.write('boom: policy.json missing\\n')\nsys.exit(3)\n"
    )
    csv_path = write_inference_csv(tmp_path / "inference.csv")
    contract = parse_target("Escape cost <= 1 cost/board", evaluator=Evaluator("command", path=str(script)))
    output = tmp_path / "metric_result.json"
    with pytest.raises(MetricContractError) as excinfo:
        evaluate_inference_csv(contract, csv_path, output_json=output, run_command=run_evaluator_command)
    message = str(excinfo.value)
    assert f"evaluator command {script}" in message
    assert "exited with status 3" in message
    assert "boom: policy.json missing" in message
    assert not output.exists()


def test_a_command_evaluator_with_a_wrong_result_leaves_no_output(tmp_path: Path) -> None:
    body = (
        "import json, sys\n"
        "json.dump({'name': 'other', 'value': 1, 'unit': 'x', 'constraints': {}}, open(sys.argv[-1], 'w'))\n"
    )
    script = executable(tmp_path / "wrong.py", body)
    csv_path = write_inference_csv(tmp_path / "inference.csv")
    contract = parse_target("Escape cost <= 1 cost/board", evaluator=Evaluator("command", path=str(script)))
    output = tmp_path / "metric_result.json"
    with pytest.raises(MetricContractError, match="name 'other' is not the contract's 'escape_cost'"):
        evaluate_inference_csv(contract, csv_path, output_json=output, run_command=run_evaluator_command)
    assert not output.exists()


def test_a_missing_command_is_reported(tmp_path: Path) -> None:
    csv_path = write_inference_csv(tmp_path / "inference.csv")
    contract = parse_target("Cost < 1", evaluator=Evaluator("command", path=str(tmp_path / "absent.sh")))
    with pytest.raises(MetricContractError, match="the executable does not exist"):
        evaluate_inference_csv(contract, csv_path, run_command=run_evaluator_command)


def test_a_command_evaluator_that_runs_too_long_is_stopped_and_named(tmp_path: Path) -> None:
    script = executable(
        tmp_path / "slow.py", "import sys, time\nsys.stderr.write('still scoring\\n')\ntime.sleep(30)\n"
    )
    csv_path = write_inference_csv(tmp_path / "inference.csv")
    evaluator = Evaluator("command", path=str(script))
    with pytest.raises(MetricContractError) as excinfo:
        run_evaluator_command(evaluator, csv_path, timeout_s=1.0)
    assert f"evaluator command {script}" in str(excinfo.value)
    assert "no result after 1 s" in str(excinfo.value)
