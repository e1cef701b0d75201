"""The bad-input catalogue: every malformed input a user can hand the product, one parametrized case each.

Each case builds one bad input in a fresh tmp_path, makes the call that must refuse it and checks three
promises of the error contract: the error is the project's own specific class (never a bare ValueError or
KeyError from deep inside), its message names where the fault is, the offending value and the fix, and the
refused call changed nothing on disk (every file's bytes and mtime and every directory listing are the same
before and after).
"""

from __future__ import annotations

import copy
import json
import subprocess
import sys
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from string import Template
from typing import Any

import pytest
import yaml

from aoi_pipeline.config import load_config
from aoi_pipeline.core.dataset import read_dataset_csv
from aoi_pipeline.core.dataset_validation import validate_dataset
from aoi_pipeline.core.leakage import CsvInRoot, assert_no_leakage
from aoi_pipeline.core.lock import WorkspaceLock, check_unlocked
from aoi_pipeline.core.metric_result import evaluate_inference_csv
from aoi_pipeline.core.metric_target import parse_target
from aoi_pipeline.core.mining_pool import resolve_mining_pool
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.overrides import apply_overrides
from aoi_pipeline.core.spec.validation import validate_spec
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.core.state import STATE_FILE, StageCommit, commit_stage, init_state, read_state
from aoi_pipeline.core.workspace import check_workspace
from aoi_pipeline.errors import (
    AoiPipelineError,
    ConfigError,
    DatasetError,
    LeakageError,
    MetricContractError,
    SpecError,
    StateError,
    WorkspaceLockedError,
)
from aoi_pipeline.pipeline.layout import RunLayout, check_run_name

TARGET = "FAR < 5% at Recall=100%"


class Scene:
    """What one case works with: tmp_path, a tiny workspace in it, values for the expected substrings."""

    def __init__(self, root: Path, ws: Any) -> None:
        self.root = root
        self.ws = ws
        self.values: dict[str, str] = {}
        self.children: list[subprocess.Popen[str]] = []

    @property
    def train_csv(self) -> Path:
        return self.ws.root / self.ws.TRAIN

    @property
    def validation_csv(self) -> Path:
        return self.ws.root / self.ws.VALIDATION

    @property
    def run_dir(self) -> Path:
        return self.root / "results" / "run_20260301_080000"


@dataclass(frozen=True)
class BadInput:
    """One catalogue entry; substrings may name `$value`s the builder put into `Scene.values`."""

    id: str
    build: Callable[[Scene], None]
    call: Callable[[Scene], object]
    error: type[AoiPipelineError]
    substrings: tuple[str, ...]
    # A known defect of the code under test: the case is expected to fail with `defect_raises` until fixed.
    defect: str | None = None
    defect_raises: type[BaseException] | None = None


CATALOGUE: list[BadInput] = []


def case(
    id: str,
    call: Callable[[Scene], object],
    error: type[AoiPipelineError],
    *substrings: str,
    defect: str | None = None,
    defect_raises: type[BaseException] | None = None,
) -> Callable[[Callable[[Scene], None]], Callable[[Scene], None]]:
    """Register the decorated builder as one catalogue entry."""

    def register(build: Callable[[Scene], None]) -> Callable[[Scene], None]:
        CATALOGUE.append(BadInput(id, build, call, error, substrings, defect, defect_raises))
        return build

    return register


# ------------------------------------------------------------------------------------------------ calls


def validate_training(scene: Scene, **options: Any) -> object:
    return validate_dataset(scene.train_csv, images_dir=scene.ws.images, mode="train", **options)


def check_train_validation_leakage(scene: Scene, validation_root: Path | None = None) -> object:
    return assert_no_leakage(
        CsvInRoot(read_dataset_csv(scene.train_csv), scene.ws.images),
        CsvInRoot(read_dataset_csv(scene.validation_csv), validation_root or scene.ws.images),
        lights=("SolderLight",),
        image_ext=".jpg",
        left_name="training",
        right_name="validation",
    )


def validate_spec_file(scene: Scene) -> object:
    path = scene.root / "spec.yaml"
    return validate_spec(load_spec(path), action="train", where=str(path))


def score_inference_csv(scene: Scene) -> object:
    # output_json must stay unwritten: a refused score leaves no result file behind.
    return evaluate_inference_csv(
        parse_target(TARGET), scene.root / "inference.csv", output_json=scene.root / "metric_result.json"
    )


def resolve_pool(scene: Scene) -> object:
    return resolve_mining_pool(
        scene.ws.root / scene.ws.POOL, images_root=scene.ws.images, light="SolderLight", image_ext=".jpg"
    )


def load_pipeline_config(scene: Scene) -> object:
    return load_config(scene.root / "pipeline.yaml")


# ------------------------------------------------------------------------------------------------ helpers


def two_good_rows(scene: Scene) -> list[dict[str, str]]:
    return [scene.ws.sample("b1", "T00"), scene.ws.sample("b1", "T01", "open")]


def write_training(scene: Scene, rows: list[dict[str, str]], columns: tuple[str, ...] | None = None) -> None:
    if columns is None:
        scene.ws.csv(scene.ws.TRAIN, rows)
    else:
        scene.ws.csv(scene.ws.TRAIN, rows, columns)


def put(tree: dict[str, Any], dotted: str, value: Any) -> None:
    """Set a dotted key in a nested dict, creating blocks; deliberately blind to the spec schema."""
    *blocks, leaf = dotted.split(".")
    for block in blocks:
        tree = tree.setdefault(block, {})
    tree[leaf] = value


def write_spec(scene: Scene, changes: dict[str, Any]) -> None:
    spec = copy.deepcopy(baseline_spec())
    for dotted, value in changes.items():
        put(spec, dotted, value)
    (scene.root / "spec.yaml").write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")


def write_inference(scene: Scene, text: str) -> None:
    (scene.root / "inference.csv").write_text(text, encoding="utf-8")


def start_run(scene: Scene) -> Path:
    init_state(
        scene.run_dir,
        kpi_target=TARGET,
        metric_contract=parse_target(TARGET).to_dict(),
        max_iterations=2,
        config={"num_epochs": 10},
    )
    return scene.run_dir / STATE_FILE


def write_pool(scene: Scene, text: str) -> None:
    scene.ws.text(scene.ws.POOL, text)


# ------------------------------------------------------------------------------------------ dataset CSVs


@case(
    "lower-case pass label",
    validate_training,
    DatasetError,
    "training_set.csv: row 2, column label",
    "'pass'",
    "write PASS in upper case",
)
def _(scene: Scene) -> None:
    write_training(scene, [scene.ws.sample("b1", "T00", "open"), scene.ws.sample("b1", "T01", "pass")])


@case(
    "absolute path in input_path",
    validate_training,
    DatasetError,
    "training_set.csv: row 1, column input_path",
    "'$absolute' is absolute",
    "write 'b1/test'",
)
def _(scene: Scene) -> None:
    rows = two_good_rows(scene)
    rows[0]["input_path"] = scene.values["absolute"] = str(scene.ws.images / "b1" / "test")
    write_training(scene, rows)


@case(
    "flat image file path in golden_path",
    validate_training,
    DatasetError,
    "training_set.csv: row 1, column golden_path",
    "'b1/golden/T00_SolderLight.jpg'",
    "write the directory 'b1/golden' in golden_path and the stem 'T00' in object_name",
)
def _(scene: Scene) -> None:
    rows = two_good_rows(scene)
    rows[0]["golden_path"] = "b1/golden/T00_SolderLight.jpg"
    write_training(scene, rows)


@case(
    "backslash-separated path",
    validate_training,
    DatasetError,
    "training_set.csv: row 2, column input_path",
    "'b1\\test'",
    "write 'b1/test'",
)
def _(scene: Scene) -> None:
    rows = two_good_rows(scene)
    rows[1]["input_path"] = "b1\\test"
    write_training(scene, rows)


@case(
    "missing test image",
    validate_training,
    DatasetError,
    "training_set.csv: row 2, column input_path",
    "b1/test/T01_SolderLight.jpg does not exist",
    "add the image",
)
def _(scene: Scene) -> None:
    write_training(scene, two_good_rows(scene))
    (scene.ws.images / "b1" / "test" / "T01_SolderLight.jpg").unlink()


@case(
    "images exist with another extension",
    lambda scene: validate_training(scene, image_ext=".png"),
    DatasetError,
    "training_set.csv: row 1, column input_path",
    "T00_SolderLight.png does not exist",
    "set image_ext (dataset.classify.image_ext) to '.jpg'",
)
def _(scene: Scene) -> None:
    write_training(scene, two_good_rows(scene))


@case(
    "UTF-8 byte order mark",
    validate_training,
    DatasetError,
    "training_set.csv",
    "byte order mark",
    "save the file as UTF-8 without BOM",
)
def _(scene: Scene) -> None:
    write_training(scene, two_good_rows(scene))
    scene.train_csv.write_bytes(b"\xef\xbb\xbf" + scene.train_csv.read_bytes())


@case(
    "semicolon delimiter",
    validate_training,
    DatasetError,
    "training_set.csv",
    "uses ';' (semicolon) as delimiter",
    "save the file comma-separated",
)
def _(scene: Scene) -> None:
    write_training(scene, two_good_rows(scene))
    scene.train_csv.write_text(scene.train_csv.read_text().replace(",", ";"), encoding="utf-8")


@case("empty file", validate_training, DatasetError, "training_set.csv", "is empty", "write a header line")
def _(scene: Scene) -> None:
    scene.ws.text(scene.ws.TRAIN, "")


@case(
    "header only",
    validate_training,
    DatasetError,
    "training_set.csv",
    "has a header but no data rows",
    "add at least one data row",
)
def _(scene: Scene) -> None:
    write_training(scene, [])


@case(
    "missing required column",
    validate_training,
    DatasetError,
    "training_set.csv",
    "missing required column(s) label",
    "the header must contain input_path, golden_path, label, object_name",
)
def _(scene: Scene) -> None:
    write_training(scene, two_good_rows(scene), ("input_path", "golden_path", "object_name"))


@case(
    "required column in the wrong case",
    validate_training,
    DatasetError,
    "training_set.csv",
    "missing required column(s) object_name",
    "rename 'Object_Name' to 'object_name'",
)
def _(scene: Scene) -> None:
    rows = [{**row, "Object_Name": row["object_name"]} for row in two_good_rows(scene)]
    write_training(scene, rows, ("input_path", "golden_path", "label", "Object_Name"))


@case(
    "defect label not lower-case",
    validate_training,
    DatasetError,
    "training_set.csv: row 2, column label",
    "'Open'",
    "write 'open'",
)
def _(scene: Scene) -> None:
    write_training(scene, [scene.ws.sample("b1", "T00"), scene.ws.sample("b1", "T01", "Open")])


@case(
    "one-class training set",
    validate_training,
    DatasetError,
    "training_set.csv: column label",
    "has only PASS rows (PASS 2)",
    "add defect rows",
)
def _(scene: Scene) -> None:
    write_training(scene, [scene.ws.sample("b1", "T00"), scene.ws.sample("b1", "T01")])


@case(
    "batch larger than rows",
    lambda scene: validate_training(scene, batch_size=8),
    DatasetError,
    "training_set.csv: batch_size",
    "batch_size 8 exceeds the 2 rows",
    "lower batch_size to at most 2",
)
def _(scene: Scene) -> None:
    write_training(scene, two_good_rows(scene))


@case(
    "duplicate rows",
    validate_training,
    DatasetError,
    "training_set.csv: row 3",
    "duplicates row 2 (input_path 'b1/test', golden_path 'b1/golden', object_name 'T01')",
    "remove row 3 or row 2",
)
def _(scene: Scene) -> None:
    rows = two_good_rows(scene)
    write_training(scene, [*rows, rows[1]])


@case(
    "NUL byte in a path cell",
    validate_training,
    DatasetError,
    "training_set.csv: row 1, column input_path",
    "b1/te",
)
def _(scene: Scene) -> None:
    rows = two_good_rows(scene)
    rows[0]["input_path"] = "b1/te\x00st"
    write_training(scene, rows)


@case(
    "leakage between training and validation",
    check_train_validation_leakage,
    LeakageError,
    "training_set.csv: row 2",
    "same sample as validation row 1",
    "b1/test/T01_SolderLight.jpg",
    "remove the sample from training or from validation",
)
def _(scene: Scene) -> None:
    rows = two_good_rows(scene)
    write_training(scene, rows)
    scene.ws.csv(scene.ws.VALIDATION, [rows[1], scene.ws.sample("b2", "T00")])


@case(
    "leakage across workspace-relative and image-root-relative paths",
    lambda scene: check_train_validation_leakage(scene, validation_root=scene.ws.root),
    LeakageError,
    "training_set.csv: row 1",
    "same sample as validation row 2",
    "b1/test/T00_SolderLight.jpg",
    "remove the sample from training or from validation",
)
def _(scene: Scene) -> None:
    write_training(scene, two_good_rows(scene))
    # Workspace-relative paths: the same files under another spelling (`images/b1/test` vs `b1/test`).
    scene.ws.csv(
        scene.ws.VALIDATION,
        [scene.ws.sample("b2", "T00", prefix="images/"), scene.ws.sample("b1", "T00", prefix="images/")],
    )


# -------------------------------------------------------------------------------------------------- specs


@case(
    "unknown spec key",
    validate_spec_file,
    SpecError,
    "spec.yaml: train.num_epoch",
    "unknown key 'train.num_epoch'",
    "rename it to train.num_epochs",
)
def _(scene: Scene) -> None:
    write_spec(scene, {"train.num_epoch": 20})


@case(
    "checkpoint_interval > num_epochs",
    validate_spec_file,
    SpecError,
    "spec.yaml: train.checkpoint_interval",
    "checkpoint_interval 12 is greater than train.num_epochs 10",
    "set train.checkpoint_interval to at most 10",
)
def _(scene: Scene) -> None:
    write_spec(scene, {"train.num_epochs": 10, "train.checkpoint_interval": 12})


@case(
    "validation_interval > num_epochs",
    validate_spec_file,
    SpecError,
    "spec.yaml: train.validation_interval",
    "validation_interval 11 is greater than train.num_epochs 10",
    "set train.validation_interval to at most 10",
)
def _(scene: Scene) -> None:
    write_spec(scene, {"train.num_epochs": 10, "train.validation_interval": 11})


@case(
    "contrastive loss with the learnable difference module",
    validate_spec_file,
    SpecError,
    "spec.yaml: train.classify.loss",
    "got 'learnable'",
    "model.classify.difference_module=euclidean",
)
def _(scene: Scene) -> None:
    write_spec(scene, {"train.classify.loss": "contrastive", "model.classify.difference_module": "learnable"})


@case(
    "batch_size 1",
    validate_spec_file,
    SpecError,
    "spec.yaml: dataset.classify.batch_size",
    "got 1",
    "set dataset.classify.batch_size to 2 or more",
)
def _(scene: Scene) -> None:
    write_spec(scene, {"dataset.classify.batch_size": 1})


@case(
    "workflow key in a spec",
    validate_spec_file,
    SpecError,
    "spec.yaml: workflow",
    "'workflow' is a workflow argument",
    "remove it from the spec",
)
def _(scene: Scene) -> None:
    write_spec(scene, {"workflow": "automl"})


@case(
    "override with an out-of-range list index",
    lambda scene: apply_overrides(load_spec(scene.root / "spec.yaml"), ["train.classify.cls_weight[2]=20"]),
    SpecError,
    "train.classify.cls_weight[2]",
    "index 2 is out of range",
    "use an index from 0 to 1",
)
def _(scene: Scene) -> None:
    write_spec(scene, {})


@case(
    "spec file with a duplicated key",
    validate_spec_file,
    SpecError,
    "spec.yaml:",
    "duplicate key 'num_epochs'",
    "fix the YAML syntax",
)
def _(scene: Scene) -> None:
    (scene.root / "spec.yaml").write_text("train:\n  num_epochs: 10\n  num_epochs: 20\n", encoding="utf-8")


# ------------------------------------------------------------------------------------------- KPI targets


@case(
    "malformed target",
    lambda scene: parse_target("FAR five percent"),
    MetricContractError,
    "target",
    "'FAR five percent'",
    "write e.g. 'FAR < 5% at Recall=100%'",
)
def _(scene: Scene) -> None:
    pass


@case(
    "FAR target without %",
    lambda scene: parse_target("FAR < 5 at Recall=100%"),
    MetricContractError,
    "target",
    "'FAR < 5 at Recall=100%' gives FAR without a unit",
    "write FAR as a percentage",
)
def _(scene: Scene) -> None:
    pass


@case(
    "target asking for equality",
    lambda scene: parse_target("FAR = 5% at Recall=100%"),
    MetricContractError,
    "target",
    "asks for equality",
    "use <, <=, > or >=",
)
def _(scene: Scene) -> None:
    pass


@case(
    "recall above 100%",
    lambda scene: parse_target("FAR < 5% at Recall=150%"),
    MetricContractError,
    "recall_target_pct",
    "150",
    "use e.g. 100",
)
def _(scene: Scene) -> None:
    pass


# ---------------------------------------------------------------------------------------- inference CSVs


@case(
    "NaN score",
    score_inference_csv,
    MetricContractError,
    "inference.csv: row 2, column siamese_score",
    "'nan'",
    "re-run inference",
)
def _(scene: Scene) -> None:
    write_inference(scene, "label,siamese_score\nPASS,0.1\nopen,nan\nPASS,0.3\n")


@case(
    "missing score",
    score_inference_csv,
    MetricContractError,
    "inference.csv: row 3, column siamese_score",
    "the score is empty",
    "re-run inference",
)
def _(scene: Scene) -> None:
    write_inference(scene, "label,siamese_score\nPASS,0.1\nopen,0.9\nPASS,\n")


@case(
    "non-numeric score",
    score_inference_csv,
    MetricContractError,
    "inference.csv: row 1, column siamese_score",
    "'high' is not a number",
    "re-run inference",
)
def _(scene: Scene) -> None:
    write_inference(scene, "label,siamese_score\nopen,high\nPASS,0.1\n")


@case(
    "inference CSV without a label column",
    score_inference_csv,
    MetricContractError,
    "inference.csv",
    "missing column(s) label; the header has object_name, siamese_score",
    "label_column",
)
def _(scene: Scene) -> None:
    write_inference(scene, "object_name,siamese_score\nT00,0.1\nT01,0.9\n")


@case(
    "inference CSV without defect rows",
    score_inference_csv,
    MetricContractError,
    "inference.csv",
    "no defect rows in column label (2 PASS rows)",
    "holds defects as well as PASS",
)
def _(scene: Scene) -> None:
    write_inference(scene, "label,siamese_score\nPASS,0.1\npass,0.9\n")


# -------------------------------------------------------------------------------------------- run state


@case(
    "truncated state file",
    lambda scene: read_state(scene.run_dir),
    StateError,
    "deft_state.json",
    "truncated or invalid JSON at line",
    "restore deft_state.json from a backup",
)
def _(scene: Scene) -> None:
    path = start_run(scene)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@case(
    "empty state file",
    lambda scene: read_state(scene.run_dir),
    StateError,
    "deft_state.json",
    "the file is empty",
    "start a fresh run",
)
def _(scene: Scene) -> None:
    start_run(scene).write_bytes(b"")


@case(
    "state with a wrong version",
    lambda scene: read_state(scene.run_dir),
    StateError,
    "deft_state.json: version",
    "version 3 is not supported",
    "start a fresh run",
)
def _(scene: Scene) -> None:
    path = start_run(scene)
    state = json.loads(path.read_text(encoding="utf-8"))
    state["version"] = 3
    path.write_text(json.dumps(state, indent=2), encoding="utf-8")


@case(
    "out-of-order state commit",
    lambda scene: commit_stage(
        scene.run_dir, StageCommit("baseline", "evaluate", "ok", "evaluated the baseline", 12.0)
    ),
    StateError,
    "deft_state.json",
    "commit baseline/evaluate",
    "the run state expects baseline/train next",
    "commit baseline/train first",
)
def _(scene: Scene) -> None:
    start_run(scene)


@case(
    "second init of an existing run state",
    lambda scene: start_run(scene),
    StateError,
    "deft_state.json",
    "a run state already exists here",
    "resume that run",
)
def _(scene: Scene) -> None:
    start_run(scene)


# ------------------------------------------------------------------------------------------ the lock

_HOLD_LOCK = """
import sys, time
from pathlib import Path
from aoi_pipeline.core.lock import WorkspaceLock, check_unlocked
WorkspaceLock(Path(sys.argv[1]), owner="nightly run").acquire()
print("locked", flush=True)
time.sleep(60)
"""


@case(
    "second concurrent run",
    lambda scene: WorkspaceLock(scene.ws.root, owner="second run").acquire(),
    WorkspaceLockedError,
    ".aoi-pipeline.lock",
    "in use by pid $pid",
    "owner 'nightly run'",
    "kill $pid",
)
def _(scene: Scene) -> None:
    child = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(scene.ws.root)], stdout=subprocess.PIPE, text=True)
    scene.children.append(child)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    scene.values["pid"] = str(child.pid)


@case(
    "lock held by a run on another host",
    lambda scene: WorkspaceLock(scene.ws.root).acquire(),
    WorkspaceLockedError,
    ".aoi-pipeline.lock",
    "in use by pid 4242 on host 'inspection-07'",
    "delete $lock by hand",
)
def _(scene: Scene) -> None:
    lock = scene.ws.root / ".aoi-pipeline.lock"
    holder = {"pid": 4242, "hostname": "inspection-07", "started_at": "2026-03-01T08:00:00+00:00", "owner": ""}
    lock.write_text(json.dumps(holder), encoding="utf-8")
    scene.values["lock"] = str(lock)


# ------------------------------------------------------------------------------------ pipeline config


@case(
    "pipeline config with an unknown key",
    load_pipeline_config,
    ConfigError,
    "pipeline.yaml key phase1.num_epoch",
    "(got 5)",
    "remove the key or correct its spelling",
)
def _(scene: Scene) -> None:
    (scene.root / "pipeline.yaml").write_text("workspace: ws\nphase1:\n  num_epoch: 5\n", encoding="utf-8")


@case(
    "pipeline config with a wrong type",
    load_pipeline_config,
    ConfigError,
    "pipeline.yaml key gpus_per_job",
    "'two'",
    "correct the value",
)
def _(scene: Scene) -> None:
    (scene.root / "pipeline.yaml").write_text("workspace: ws\ngpus_per_job: two\n", encoding="utf-8")


@case(
    "pipeline config that is not YAML",
    load_pipeline_config,
    ConfigError,
    "pipeline.yaml",
    "is not valid YAML",
    "fix the YAML syntax",
)
def _(scene: Scene) -> None:
    (scene.root / "pipeline.yaml").write_text("workspace: [ws\n", encoding="utf-8")


# ---------------------------------------------------------------------------------------- mining pool


@case(
    "mining pool row resolving to no file",
    resolve_pool,
    DatasetError,
    "mining_pool.csv: row 2, column filepath",
    "'b9/test/T00_SolderLight.jpg' matches no existing file",
    "point it at the image file",
)
def _(scene: Scene) -> None:
    scene.ws.sample("b1", "T00")
    write_pool(scene, "filepath,label\nb1/test/T00_SolderLight.jpg,PASS\nb9/test/T00_SolderLight.jpg,open\n")


@case(
    "mining pool row resolving to two files",
    resolve_pool,
    DatasetError,
    "mining_pool.csv: row 1, column filepath",
    "'b1/test/T00_SolderLight.jpg' matches 2 distinct files",
    "make the path match exactly one file",
)
def _(scene: Scene) -> None:
    scene.ws.sample("b1", "T00")
    write_pool(scene, "filepath,label\nb1/test/T00_SolderLight.jpg,PASS\n")
    # The same relative path also exists beside the pool CSV: relative to which root is ambiguous.
    twin = scene.ws.root / "augmentation" / "mining_pool" / "b1" / "test" / "T00_SolderLight.jpg"
    twin.parent.mkdir(parents=True)
    twin.write_bytes(b"another image")


@case(
    "mining pool row with a NUL byte",
    resolve_pool,
    DatasetError,
    "mining_pool.csv: row 1, column filepath",
    "b1/te",
)
def _(scene: Scene) -> None:
    scene.ws.sample("b1", "T00")
    write_pool(scene, "filepath,label\nb1/te\x00st/T00_SolderLight.jpg,PASS\n")


# ------------------------------------------------------------------ bounds, sizes and paths outside the workspace


@case(
    "input_path climbing out of images_dir",
    validate_training,
    DatasetError,
    "training_set.csv: row 1, column input_path",
    "'../../outside' resolves outside images_dir",
    "keep every image inside the workspace",
)
def _(scene: Scene) -> None:
    rows = two_good_rows(scene)
    rows[0]["input_path"] = "../../outside"
    write_training(scene, rows)


@case(
    "a million-column CSV header",
    validate_training,
    DatasetError,
    "training_set.csv: header",
    "has 1000004 columns",
    "keep input_path, golden_path, label, object_name",
)
def _(scene: Scene) -> None:
    header = "input_path,golden_path,label,object_name," + ",".join(f"c{i}" for i in range(1_000_000))
    scene.ws.text(scene.ws.TRAIN, header + "\n")


@case(
    "mining pool listing one image twice",
    resolve_pool,
    DatasetError,
    "mining_pool.csv: row 3",
    "duplicates row 1",
    "delete the duplicate row",
)
def _(scene: Scene) -> None:
    scene.ws.sample("b1", "T00")
    scene.ws.sample("b1", "T01", "open")
    write_pool(
        scene,
        "filepath,label\nb1/test/T00_SolderLight.jpg,PASS\nb1/test/T01_SolderLight.jpg,open\n"
        "b1/test/T00_SolderLight.jpg,PASS\n",
    )


@case(
    "pipeline config with a boolean epoch count",
    load_pipeline_config,
    ConfigError,
    "pipeline.yaml key phase1.num_epochs",
    "(got True)",
    "correct the value",
)
def _(scene: Scene) -> None:
    (scene.root / "pipeline.yaml").write_text("workspace: ws\nphase1:\n  num_epochs: true\n", encoding="utf-8")


@case(
    "pipeline config with 1e12 epochs",
    load_pipeline_config,
    ConfigError,
    "pipeline.yaml key deft.num_epochs",
    "(got 1000000000000.0)",
    "correct the value",
)
def _(scene: Scene) -> None:
    (scene.root / "pipeline.yaml").write_text("workspace: ws\ndeft:\n  num_epochs: 1e12\n", encoding="utf-8")


@case(
    "pipeline config with a YAML alias bomb",
    load_pipeline_config,
    ConfigError,
    "pipeline.yaml key phase1.spec_overrides",
    "correct the value",
)
def _(scene: Scene) -> None:
    levels = ["a0: &a0 [x, x, x, x, x, x, x, x, x]"]
    levels += [f"a{i}: &a{i} [*a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}, *a{i - 1}]" for i in range(1, 8)]
    bomb = "\n".join(f"  {line}" for line in levels)
    # The anchors must come first in YAML: put them in a key the config does not know (refused too).
    text = f"x-anchors:\n{bomb}\nworkspace: ws\nphase1:\n  spec_overrides: *a7\n"
    (scene.root / "pipeline.yaml").write_text(text, encoding="utf-8")


@case(
    "spec with a 100000-pixel image width",
    validate_spec_file,
    SpecError,
    "spec.yaml: dataset.classify.image_width",
    "100000",
)
def _(scene: Scene) -> None:
    write_spec(scene, {"dataset.classify.image_width": 100000})


@case(
    "spec with 1e12 epochs",
    validate_spec_file,
    SpecError,
    "spec.yaml: train.num_epochs",
)
def _(scene: Scene) -> None:
    write_spec(scene, {"train.num_epochs": 10**12})


# ------------------------------------------------------------------------ run names, lock, run-owned keys


@case(
    "run name that climbs out of the results root",
    lambda scene: RunLayout.for_run(scene.root / "results", "../../x", where="--run-name"),
    ConfigError,
    "--run-name",
    "'../../x' is not a run name",
    "give a plain name",
)
def _(scene: Scene) -> None:
    pass


@case(
    "absolute run name",
    lambda scene: check_run_name(str(scene.root / "elsewhere"), where="flow parameter run_name"),
    ConfigError,
    "flow parameter run_name",
    "no absolute path",
)
def _(scene: Scene) -> None:
    pass


@case(
    "run name of two path components",
    lambda scene: check_run_name("nightly/run_1", where="approve RUN"),
    ConfigError,
    "approve RUN",
    "'nightly/run_1' is not a run name",
)
def _(scene: Scene) -> None:
    pass


@case(
    "workspace locked by a live run, checked before any write",
    lambda scene: check_unlocked(scene.ws.root),
    WorkspaceLockedError,
    ".aoi-pipeline.lock",
    "in use by pid $pid",
    "kill $pid",
)
def _(scene: Scene) -> None:
    child = subprocess.Popen([sys.executable, "-c", _HOLD_LOCK, str(scene.ws.root)], stdout=subprocess.PIPE, text=True)
    scene.children.append(child)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    scene.values["pid"] = str(child.pid)


@case(
    "results_dir spec override the pipeline would ignore",
    load_pipeline_config,
    ConfigError,
    "pipeline.yaml key spec_overrides",
    "results_dir is set by the pipeline for every job",
    "remove that override",
)
def _(scene: Scene) -> None:
    text = "workspace: ws\nspec_overrides: ['results_dir=/tmp/outside']\n"
    (scene.root / "pipeline.yaml").write_text(text, encoding="utf-8")


@case(
    "phase train.results_dir spec override",
    load_pipeline_config,
    ConfigError,
    "pipeline.yaml key phase3.spec_overrides",
    "train.results_dir is set by the pipeline",
)
def _(scene: Scene) -> None:
    text = "workspace: ws\nphase3:\n  spec_overrides: ['train.results_dir=../../x']\n"
    (scene.root / "pipeline.yaml").write_text(text, encoding="utf-8")


# ------------------------------------------------------------------------------------ image folders


@case(
    "symbolic-link loop under images/ on a CSV's path",
    lambda scene: check_workspace(scene.ws.root),
    DatasetError,
    "$loop: is a symbolic-link loop",
    "replace the link",
)
def _(scene: Scene) -> None:
    scene.ws.write_valid()
    board = scene.ws.images / "b1"
    for path in sorted(board.rglob("*"), reverse=True):
        path.unlink() if path.is_file() else path.rmdir()
    board.rmdir()
    board.symlink_to("b1")
    scene.values["loop"] = str(board / "test")


@case(
    "one colour image among grey ones",
    lambda scene: check_workspace(scene.ws.root),
    DatasetError,
    "images (grey and colour mixed)",
    "$colour (RGB, $csv row 2)",
    "convert the colour images to grey",
)
def _(scene: Scene) -> None:
    from PIL import Image

    scene.ws.write_valid()
    for path in scene.ws.images.rglob("*.jpg"):
        Image.new("L", (4, 4), 90).save(path, format="JPEG")
    colour = scene.ws.images / "b1" / "test" / "T01_SolderLight.jpg"
    Image.new("RGB", (4, 4), (200, 10, 10)).save(colour, format="JPEG")
    scene.values.update(colour=str(colour), csv=str(scene.train_csv))


# ------------------------------------------------------------------------------------------------ tests


@pytest.fixture
def scene(tmp_path: Path, tiny_ws: Any) -> Iterator[Scene]:
    scene = Scene(tmp_path, tiny_ws)
    yield scene
    for child in scene.children:
        child.kill()
        child.wait()
        if child.stdout is not None:
            child.stdout.close()


def test_the_catalogue_covers_at_least_thirty_distinct_inputs() -> None:
    ids = [entry.id for entry in CATALOGUE]
    assert len([entry for entry in CATALOGUE if entry.defect is None]) >= 30
    assert len(set(ids)) == len(ids)


def catalogue_params() -> list[Any]:
    return [
        pytest.param(
            entry,
            id=entry.id,
            marks=[]
            if entry.defect is None
            else [pytest.mark.xfail(strict=True, raises=entry.defect_raises, reason=entry.defect)],
        )
        for entry in CATALOGUE
    ]


@pytest.mark.parametrize("bad", catalogue_params())
def test_bad_input_is_refused_with_an_actionable_message_and_nothing_changes(
    bad: BadInput, scene: Scene, snapshot_tree: Callable[[Path], dict]
) -> None:
    bad.build(scene)
    before = snapshot_tree(scene.root)

    with pytest.raises(AoiPipelineError) as caught:
        bad.call(scene)

    error = caught.value
    assert type(error) is bad.error, f"{type(error).__name__} raised: {error}"
    message = str(error)
    for template in bad.substrings:
        expected = Template(template).substitute(scene.values)
        assert expected in message, f"{expected!r} not in the message:\n{message}"
    assert all(problem.where and problem.what and problem.fix for problem in error.problems)
    assert len(message) < 100_000, f"a {len(message)}-character message is not read by anyone"
    assert snapshot_tree(scene.root) == before


def test_every_problem_of_a_csv_is_reported_at_once(scene: Scene) -> None:
    rows = [scene.ws.sample("b1", "T00", "pass"), scene.ws.sample("b1", "T01", "open")]
    rows[1]["input_path"] = "/abs/b1/test"
    write_training(scene, [*rows, rows[0]])

    with pytest.raises(DatasetError) as caught:
        validate_training(scene, batch_size=64)

    message = str(caught.value)
    for fault in ("'pass'", "'/abs/b1/test' is absolute", "duplicates row 1", "batch_size 64"):
        assert fault in message
    assert len(caught.value.problems) >= 4
