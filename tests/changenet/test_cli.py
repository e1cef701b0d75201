"""The `aoi-changenet` command line: output files, status lines, warnings, spec errors and exit codes."""

from __future__ import annotations

import json
import subprocess
import sys
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import yaml
from changenet_workspace import Workspace, run_subprocess, status_records

LATEST = "changenet_model_classify_latest.pth"


def test_train_writes_tao_named_outputs(trained: Workspace) -> None:
    train_dir = trained.results / "train"
    # 24 rows at batch 8 are 3 steps an epoch; checkpoint_interval 1 over 2 epochs (0-based names).
    expected = {
        "model_epoch_000_step_00003.pth",
        "model_epoch_001_step_00006.pth",
        LATEST,
        "experiment.yaml",
        "train.log",
        "status.json",
        "reference_model.json",  # the runtime describes the network it trained beside the checkpoints
    }
    assert {path.name for path in train_dir.iterdir()} == expected


def test_experiment_yaml_is_the_resolved_spec(trained: Workspace) -> None:
    experiment = yaml.safe_load((trained.results / "train" / "experiment.yaml").read_text())
    assert experiment["train"]["results_dir"] == str(trained.results / "train")
    assert experiment["evaluate"]["batch_size"] == 8  # ${dataset.classify.batch_size}, kept an integer
    assert experiment["dataset"]["classify"]["image_width"] == 32


def test_status_lines_follow_tao(trained: Workspace) -> None:
    records = status_records(trained.results / "train")
    assert records[0]["status"] == "STARTED"
    assert records[-1]["status"] == "SUCCESS"
    assert all({"date", "time", "status", "message"} <= set(record) for record in records)
    month, day, year = records[0]["date"].split("/")
    assert 1 <= int(month) <= 12 and 1 <= int(day) <= 31 and len(year) == 4
    validations = [r for r in records if "val_loss" in r.get("kpi", {})]
    assert [r["epoch"] for r in validations] == [0, 1]  # 0-based, as the checkpoint file names
    for record in validations:
        assert record["max_epoch"] == 1
        assert set(record["kpi"]) >= {"val_loss", "val_acc", "val_far"}
        assert 0.0 <= record["kpi"]["val_far"] <= 100.0
        assert 0.0 <= record["kpi"]["val_acc"] <= 100.0
    progress = [r for r in records if r["message"] == "Training loop in progress"]
    assert [r["epoch"] for r in progress] == [0, 1]
    # Beside TAO's whole-second `time`: a UTC timestamp precise enough to time a job's start-up, in order.
    stamps = [datetime.fromisoformat(record["timestamp"]) for record in records]
    assert all(stamp.utcoffset() == timedelta(0) for stamp in stamps)
    assert stamps == sorted(stamps)
    assert stamps[0].replace(microsecond=0, tzinfo=None) <= datetime.now(UTC).replace(tzinfo=None)


def test_scoring_dates_its_start_before_its_result(trained: Workspace, run_cli, tmp_path: Path) -> None:
    checkpoint = trained.results / "train" / LATEST
    code, _, _ = run_cli(
        "inference", "-e", trained.spec_path, f"inference.checkpoint={checkpoint}", f"inference.results_dir={tmp_path}"
    )
    assert code == 0
    records = status_records(tmp_path)
    assert [record["status"] for record in records] == ["STARTED", "RUNNING", "SUCCESS"]
    assert records[0]["message"] == "Starting inference."
    assert records[0]["timestamp"] <= records[1]["timestamp"]


def test_unhonoured_keys_give_one_warning(workspace: Workspace, run_cli) -> None:
    code, out, err = run_cli("train", "-e", workspace.spec_path, "train.num_epochs=1", "train.checkpoint_interval=1")
    assert code == 0
    assert err.count("WARNING") == 1
    assert "model.backbone.type='c_radio_v2_vit_base_patch16_224'" in err
    assert "model.decode_head" in err
    assert out.rstrip().endswith("Execution status: PASS")


@pytest.mark.parametrize(
    ("overrides", "expected"),
    [
        (["train.num_epoch=3"], ["train.num_epoch", "train.num_epochs"]),
        (["train.classify.loss=contrastive"], ["contrastive", "euclidean"]),
        (["train.checkpoint_interval=5"], ["checkpoint_interval 5", "num_epochs 2"]),
        (["reference.devise=cpu"], ["reference", "devise", "reference.device"]),
    ],
)
def test_bad_spec_fails_cleanly_before_writing(
    workspace: Workspace, run_cli, overrides: list[str], expected: list[str]
) -> None:
    code, out, err = run_cli("train", "-e", workspace.spec_path, *overrides)
    assert code == 1
    for text in expected:
        assert text in err
    failure = [json.loads(line) for line in out.splitlines() if line.startswith("{")]
    assert [record["status"] for record in failure] == ["FAILURE"]
    assert out.rstrip().endswith("Execution status: FAIL")
    assert not workspace.results.exists()


def test_unknown_key_in_the_spec_file_names_it_and_the_fix(workspace: Workspace, run_cli) -> None:
    spec = yaml.safe_load(workspace.spec_path.read_text())
    spec["model"]["classify"]["difference_modul"] = "learnable"
    workspace.spec_path.write_text(yaml.safe_dump(spec))
    code, _, err = run_cli("train", "-e", workspace.spec_path)
    assert code == 1
    assert "model.classify.difference_modul" in err
    assert "model.classify.difference_module" in err


def test_missing_image_is_a_dataset_error_before_any_write(workspace: Workspace, run_cli) -> None:
    missing = workspace.images / "tr005" / "golden" / "T00_SolderLight.png"
    missing.unlink()
    code, _, err = run_cli("train", "-e", workspace.spec_path)
    assert code == 1
    assert str(missing) in err
    assert not workspace.results.exists()


def test_console_entry_exits_non_zero_on_failure(tmp_path: Path) -> None:
    result = run_subprocess("inference", "-e", tmp_path / "absent.yaml")
    assert result.returncode == 1
    assert "absent.yaml" in result.stderr
    assert '"status": "FAILURE"' in result.stdout
    assert result.stdout.rstrip().endswith("Execution status: FAIL")


def test_the_command_module_does_not_import_torch() -> None:
    code = "import sys, aoi_pipeline.changenet.cli; print('torch' in sys.modules)"
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "False"
