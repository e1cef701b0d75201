"""The `aoi-pipeline` command line: `data check`, `data synth`, `kpi`, `--version` and argument errors.

Commands run in-process through `main(argv)` (its return value is the exit code); one test runs the installed
command in a subprocess to check the exit code reaches the shell. Expected numbers come from the tiny
workspaces built here, from the DeepPCB-AOI README, or from a brute-force FAR computed in the test.
"""

from __future__ import annotations

import csv
import importlib.metadata
import json
import random
import re
import subprocess
import sys
from fractions import Fraction
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest

from aoi_pipeline.cli import main

DEEPPCB = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "deeppcb-aoi"
SETS = {
    "training": "train/base/training_set.csv",
    "validation": "train/base/validation_set.csv",
    "kpi": "kpi/testing_set.csv",
    "mining_pool": "augmentation/mining_pool/mining_pool.csv",
}
DEFECT_TYPES = {"open", "short", "mousebite", "spur", "copper", "pin_hole"}


def run(capsys: pytest.CaptureFixture[str], *argv: Any) -> tuple[int, str, str]:
    code = main([str(arg) for arg in argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def summary_table(out: str) -> dict[str, tuple[str, int, dict[str, int]]]:
    """{set: (file, rows, label counts)} read from the rendered `data check` table."""
    table = {}
    for line in out.splitlines():
        cells = re.split(r"\s{2,}", line.strip())
        if cells[0] in SETS and len(cells) == 4:
            name, file, rows, labels = cells
            counts = {label: int(count) for label, count in (item.rsplit(" ", 1) for item in labels.split(", "))}
            table[name] = (file, int(rows), counts)
    return table


# ------------------------------------------------------------------------------------------- data check


def test_data_check_of_a_good_workspace_prints_rows_and_labels_of_every_set(tiny_ws, capsys) -> None:
    tiny_ws.write_valid()

    code, out, err = run(capsys, "data", "check", tiny_ws.root)

    assert (code, err) == (0, "")
    assert summary_table(out) == {
        "training": (SETS["training"], 3, {"PASS": 1, "open": 2}),
        "validation": (SETS["validation"], 2, {"PASS": 1, "short": 1}),
        "kpi": (SETS["kpi"], 4, {"PASS": 2, "open": 1, "short": 1}),
        "mining_pool": (SETS["mining_pool"], 2, {"PASS": 1, "open": 1}),
    }
    pairs = re.findall(r"^(\w+) / (\w+)\s+(\d+)$", out, flags=re.MULTILINE)
    assert len(pairs) == 6 and all(count == "0" for _, _, count in pairs)


def test_data_check_json_carries_the_same_summary(tiny_ws, capsys) -> None:
    tiny_ws.write_valid()

    code, out, _ = run(capsys, "data", "check", tiny_ws.root, "--json")

    assert code == 0
    report = json.loads(out)
    assert {c["name"]: (c["rows"], c["label_counts"]) for c in report["csvs"]} == {
        "training": (3, {"PASS": 1, "open": 2}),
        "validation": (2, {"PASS": 1, "short": 1}),
        "kpi": (4, {"PASS": 2, "open": 1, "short": 1}),
        "mining_pool": (2, {"PASS": 1, "open": 1}),
    }


def test_data_check_of_a_broken_workspace_lists_every_problem_of_every_file(tiny_ws, capsys) -> None:
    tiny_ws.write_valid()
    # Problem 1: a lower-case pass in row 2 of the training set.
    tiny_ws.csv(
        tiny_ws.TRAIN,
        [tiny_ws.sample("b1", "T00", "open"), tiny_ws.sample("b1", "T01", "pass"), tiny_ws.sample("b1", "T02")],
    )
    # Problem 2: the golden image of KPI row 3 is gone.
    (tiny_ws.images / "b3" / "golden" / "T02_SolderLight.jpg").unlink()

    code, out, err = run(capsys, "data", "check", tiny_ws.root)

    assert code == 1
    assert out == ""
    assert "training_set.csv: row 2, column label" in err and "'pass'" in err
    assert "testing_set.csv: row 3, column golden_path" in err and "T02_SolderLight.jpg does not exist" in err
    assert "Traceback" not in err


def test_data_check_of_a_missing_workspace_exits_1(tmp_path, capsys) -> None:
    code, out, err = run(capsys, "data", "check", tmp_path / "nowhere")

    assert (code, out) == (1, "")
    assert "nowhere" in err and "does not exist" in err


@pytest.mark.slow
def test_data_check_of_deeppcb_matches_its_readme(capsys) -> None:
    if not DEEPPCB.is_dir():
        pytest.skip("../shared/data/deeppcb-aoi is absent: the DeepPCB-AOI workspace is not on this machine")

    code, out, err = run(capsys, "data", "check", DEEPPCB, "--image-ext", ".png")

    assert (code, err) == (0, "")
    table = summary_table(out)
    # From the README's layout table: rows per file, PASS rows, and the training set's full label counts.
    readme = {"training": (480, 320), "validation": (882, 530), "kpi": (3702, 2308), "mining_pool": (9623, 5772)}
    for name, (rows, passes) in readme.items():
        file, printed_rows, counts = table[name]
        assert (file, printed_rows, counts["PASS"]) == (SETS[name], rows, passes)
        assert sum(counts.values()) == rows
    assert table["training"][2] == {
        "PASS": 320,
        "open": 43,
        "mousebite": 39,
        "short": 38,
        "copper": 32,
        "pin_hole": 4,
        "spur": 4,
    }
    for name in ("validation", "kpi", "mining_pool"):
        assert set(table[name][2]) == {"PASS"} | DEFECT_TYPES  # "+ all six types"
    # "Boards never straddle two files": no sample is shared by any two sets.
    pairs = re.findall(r"^(\w+) / (\w+)\s+(\d+)$", out, flags=re.MULTILINE)
    assert len(pairs) == 6 and all(count == "0" for _, _, count in pairs)


# -------------------------------------------------------------------------------------------- data synth


def test_data_synth_writes_a_workspace_that_passes_data_check(tmp_path, capsys) -> None:
    out_dir = tmp_path / "synth"

    code, synth_out, _ = run(capsys, "data", "synth", out_dir, "--boards", 8, "--size", 32, "--seed", 1)
    assert code == 0

    code, check_out, err = run(capsys, "data", "check", out_dir, "--image-ext", ".png")
    assert (code, err) == (0, "")
    written = {name: int(rows) for name, rows in re.findall(r"^\s+(\w+): (\d+) rows", synth_out, re.MULTILINE)}
    checked = {name: rows for name, (_, rows, _) in summary_table(check_out).items()}
    assert written == checked and set(checked) == set(SETS)
    # 8 boards of 16 tiles: the four sets together hold at most 8 * 16 components.
    assert sum(checked.values()) <= 8 * 16


def test_data_synth_refuses_a_folder_that_holds_files_and_leaves_it_alone(tmp_path, capsys) -> None:
    target = tmp_path / "notes"
    target.mkdir()
    (target / "todo.txt").write_text("keep me\n", encoding="utf-8")

    code, out, err = run(capsys, "data", "synth", target, "--boards", 8, "--size", 32)

    assert (code, out) == (1, "")
    assert str(target) in err and "not empty" in err
    assert [p.name for p in target.iterdir()] == ["todo.txt"]
    assert (target / "todo.txt").read_text(encoding="utf-8") == "keep me\n"


@pytest.mark.parametrize("option", [["--boards", "0"], ["--size", "4"], ["--image-ext", ".gif"]])
def test_data_synth_with_an_impossible_option_exits_1_and_writes_nothing(tmp_path, capsys, option) -> None:
    code, _, err = run(capsys, "data", "synth", tmp_path / "out", *option)

    assert code == 1
    assert option[1] in err
    assert not (tmp_path / "out").exists()


# --------------------------------------------------------------------------------------------------- kpi


def brute_force_far_pct(rows: list[tuple[str, float]], recall_pct: str) -> float:
    """FAR at the highest threshold whose `score >= t` rule keeps `recall_pct` of the defect rows."""
    defects = [score for label, score in rows if label != "PASS"]
    passes = [score for label, score in rows if label == "PASS"]
    for threshold in sorted({score for _, score in rows}, reverse=True):
        kept = sum(score >= threshold for score in defects)
        if kept * 100 >= Fraction(recall_pct) * len(defects):
            return 100 * sum(score >= threshold for score in passes) / len(passes)
    raise AssertionError("unreachable: the lowest score keeps every defect")


@pytest.fixture
def inference_rows() -> list[tuple[str, float]]:
    """40 PASS and 20 defect rows; two-decimal scores give ties, one defect scores lower than most PASS."""
    rng = random.Random(20260301)
    rows = [("PASS", round(rng.uniform(0.0, 0.8), 2)) for _ in range(40)]
    rows += [(rng.choice(sorted(DEFECT_TYPES)), round(rng.uniform(0.5, 1.0), 2)) for _ in range(19)]
    rows.append(("open", 0.05))
    rng.shuffle(rows)
    return rows


def write_inference(path: Path, rows: list[tuple[str, float]]) -> Path:
    with path.open("w", newline="", encoding="utf-8") as handle:
        writer = csv.writer(handle)
        writer.writerow(["input_path", "golden_path", "label", "object_name", "siamese_score"])
        for number, (label, score) in enumerate(rows):
            writer.writerow(["b1/test", "b1/golden", label, f"T{number:03d}", repr(score)])
    return path


@pytest.mark.parametrize("recall", ["100", "95"])
def test_kpi_prints_the_far_a_brute_force_count_gives(tmp_path, capsys, inference_rows, recall) -> None:
    csv_path = write_inference(tmp_path / "inference.csv", inference_rows)
    # Recall=95% may leave the weakest defect out: the two operating points must differ on this data.
    assert brute_force_far_pct(inference_rows, "100") > brute_force_far_pct(inference_rows, "95")

    code, out, err = run(capsys, "kpi", csv_path, "--target", f"FAR < 5% at Recall={recall}%")

    assert (code, err) == (0, "")
    result = json.loads(out)
    assert result["name"] == "far_pct"
    assert result["value"] == pytest.approx(brute_force_far_pct(inference_rows, recall), abs=1e-12)
    assert result["constraints"]["recall_pct"] >= float(recall)
    assert result["passed"] is (result["value"] < 5 and result["constraints"]["recall_pct"] >= float(recall))


def test_kpi_output_json_holds_the_printed_result(tmp_path, capsys, inference_rows) -> None:
    csv_path = write_inference(tmp_path / "inference.csv", inference_rows)
    output = tmp_path / "out" / "metric_result.json"

    code, out, _ = run(capsys, "kpi", csv_path, "--target", "FAR < 5% at Recall=100%", "--output-json", output)

    assert code == 0
    written = json.loads(output.read_text(encoding="utf-8"))
    printed = json.loads(out)
    assert written["value"] == printed["value"] == pytest.approx(brute_force_far_pct(inference_rows, "100"))


def test_kpi_on_a_bad_csv_exits_1_naming_the_row_and_writes_nothing(tmp_path, capsys) -> None:
    csv_path = tmp_path / "inference.csv"
    csv_path.write_text("label,siamese_score\nPASS,0.1\nopen,0.9\nshort,oops\n", encoding="utf-8")
    output = tmp_path / "metric_result.json"

    code, out, err = run(capsys, "kpi", csv_path, "--target", "FAR < 5% at Recall=100%", "--output-json", output)

    assert (code, out) == (1, "")
    assert "inference.csv: row 3, column siamese_score" in err and "'oops'" in err
    assert not output.exists()


def test_kpi_with_a_malformed_target_exits_1(tmp_path, capsys, inference_rows) -> None:
    csv_path = write_inference(tmp_path / "inference.csv", inference_rows)

    code, out, err = run(capsys, "kpi", csv_path, "--target", "FAR five percent")

    assert (code, out) == (1, "")
    assert "'FAR five percent'" in err


def test_the_installed_command_returns_exit_code_1_to_the_shell(tmp_path) -> None:
    csv_path = tmp_path / "inference.csv"
    csv_path.write_text("label,siamese_score\nPASS,0.1\nopen,nan\n", encoding="utf-8")
    script = Path(sys.executable).with_name("aoi-pipeline")
    command = [str(script)] if script.is_file() else [sys.executable, "-m", "aoi_pipeline.cli"]

    done = subprocess.run(
        [*command, "kpi", str(csv_path), "--target", "FAR < 5% at Recall=100%"],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    assert done.returncode == 1
    assert "row 2" in done.stderr and "Traceback" not in done.stderr


# ----------------------------------------------------------------------------------- version and usage


def test_version_prints_the_installed_version(capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(["--version"])

    assert exited.value.code == 0
    assert capsys.readouterr().out == f"aoi-pipeline {importlib.metadata.version('aoi-pipeline')}\n"


@pytest.mark.parametrize(
    "argv",
    [
        [],
        ["data"],
        ["data", "check"],
        ["data", "synth"],
        ["kpi"],
        ["kpi", "inference.csv"],
        ["data", "check", "ws", "--batch-size", "many"],
        ["frobnicate"],
    ],
    ids=lambda argv: " ".join(argv) or "(nothing)",
)
def test_missing_or_wrong_arguments_exit_2_with_usage(argv, capsys) -> None:
    with pytest.raises(SystemExit) as exited:
        main(argv)

    assert exited.value.code == 2
    assert "usage: aoi-pipeline" in capsys.readouterr().err


# ------------------------------------------------------------------------------------- approve and status


@pytest.fixture
def paused_run(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """One run waiting on a plan, as the control API would report it; returns the decisions taken."""
    import aoi_pipeline.cli as cli
    import aoi_pipeline.control as control

    info = control.RunInfo(
        id=UUID(int=7),
        name="run_20260101_000000",
        state="Paused",
        state_type="PAUSED",
        started=None,
        ui_url="http://ui/runs/flow-run/7",
    )
    decided: list[dict[str, Any]] = []
    monkeypatch.setattr(cli, "_connect", lambda: None)
    monkeypatch.setattr(control, "find_run", lambda run: info)
    monkeypatch.setattr(control, "waiting_plan", lambda run: control.WaitingPlan("0123abcd0123abcd", "FAR < 5% on /ws"))
    monkeypatch.setattr(control, "decide", lambda run, **options: decided.append({"run": run, **options}) or run)
    return decided


@pytest.mark.parametrize("answer", ["y", "yes"])
def test_approve_latest_shows_the_run_and_plan_and_decides_once_confirmed(paused_run, monkeypatch, capsys, answer):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    asked: list[str] = []
    monkeypatch.setattr("builtins.input", lambda question: asked.append(question) or answer)

    code, out, _ = run(capsys, "approve", "--latest", "--reviewer", "ana", "--comment", "ok")

    assert code == 0
    assert "run_20260101_000000" in out and "0123abcd0123abcd" in out and "FAR < 5% on /ws" in out
    assert asked and "0123abcd0123abcd" in asked[0]
    ((decision,),) = [tuple(paused_run)]
    assert (decision["reviewer"], decision["comment"], decision["reject"], decision["plan_hash"]) == (
        "ana",
        "ok",
        False,
        "0123abcd0123abcd",
    )


def test_approve_latest_decides_nothing_when_the_reviewer_declines(paused_run, monkeypatch, capsys):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda question: "")

    code, out, _ = run(capsys, "approve", "--latest", "--reviewer", "ana")

    assert code == 1 and paused_run == []
    assert "Nothing decided" in out


def test_approve_without_a_terminal_needs_yes_and_decides_nothing(paused_run, monkeypatch, capsys):
    monkeypatch.setattr(sys.stdin, "isatty", lambda: False, raising=False)

    code, out, err = run(capsys, "approve", "--latest", "--reviewer", "ana")

    assert code == 2 and paused_run == []
    assert "0123abcd0123abcd" in out and "--yes" in err


def test_approve_with_yes_rejects_without_asking(paused_run, monkeypatch, capsys):
    monkeypatch.setattr("builtins.input", lambda question: pytest.fail("asked although --yes was given"))

    code, out, _ = run(capsys, "approve", "--latest", "--reviewer", "bob", "--reject", "--yes")

    assert code == 0 and "Rejected run_20260101_000000" in out
    assert [decision["reject"] for decision in paused_run] == [True]


@pytest.mark.parametrize("limit", ["0", "-3", "many"])
def test_status_with_a_limit_below_one_is_an_argument_error(limit, capsys):
    with pytest.raises(SystemExit) as exited:
        main(["status", "--limit", limit])
    assert exited.value.code == 2
    assert "--limit" in capsys.readouterr().err


# ------------------------------------------------------------------------- run names and the workspace lock


def _run_config(tiny_ws: Any, tmp_path: Path) -> Path:
    tiny_ws.write_valid()
    config = tmp_path / "pipeline.yaml"
    config.write_text(f"workspace: {tiny_ws.root}\n", encoding="utf-8")
    return config


def _tree(root: Path) -> set[str]:
    return {str(path.relative_to(root)) for path in root.rglob("*")}


@pytest.mark.parametrize("name", ["../../x", "/tmp/aoi-outside", "a/b", ".."])
def test_run_with_an_unsafe_run_name_exits_1_in_one_line_and_writes_nothing(tiny_ws, tmp_path, capsys, name) -> None:
    config = _run_config(tiny_ws, tmp_path)
    before = _tree(tmp_path)

    code, out, err = run(capsys, "run", "--config", config, "--yes", "--run-name", name)

    assert (code, out) == (1, "")
    assert err.startswith("error: --run-name: ") and "Fix:" in err and len(err.strip().splitlines()) == 1
    assert _tree(tmp_path) == before
    assert not Path("/tmp/aoi-outside").exists()


@pytest.mark.parametrize(
    "argv",
    [("approve", "../../x", "--reviewer", "r"), ("status", "../../x"), ("publish", "../../x")],
)
def test_commands_that_take_a_run_name_refuse_an_unsafe_one(capsys, argv) -> None:
    code, out, err = run(capsys, *argv)

    assert (code, out) == (1, "")
    assert "is not a run name" in err and "Traceback" not in err


def test_run_on_a_locked_workspace_is_refused_in_one_line_before_anything_is_written(tiny_ws, tmp_path, capsys) -> None:
    from aoi_pipeline.core.lock import WorkspaceLock

    config = _run_config(tiny_ws, tmp_path)
    before = _tree(tmp_path)
    with WorkspaceLock(tiny_ws.root, owner="aoi-pipeline run_first"):
        code, out, err = run(capsys, "run", "--config", config, "--yes", "--run-name", "run_second")
        assert _tree(tmp_path) == before | {"ws/.aoi-pipeline.lock"}

    assert (code, out) == (1, "")
    assert len(err.strip().splitlines()) == 1 and "run_first" in err and "Traceback" not in err
    assert not (tiny_ws.root / "results").exists()
