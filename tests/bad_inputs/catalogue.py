"""The bad-input catalogue's framework: the scene a case works in, the case registry and the calls that must
refuse. The cases live in the `cases_*` modules beside this file, grouped by what kind of input they break;
`test_bad_input_catalogue` runs every registered case against the error contract."""

from __future__ import annotations

import copy
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from aoi_pipeline.config import load_config
from aoi_pipeline.core.dataset import read_dataset_csv
from aoi_pipeline.core.dataset_validation import validate_dataset
from aoi_pipeline.core.leakage import CsvInRoot, assert_no_leakage
from aoi_pipeline.core.metric_result import evaluate_inference_csv
from aoi_pipeline.core.metric_target import parse_target
from aoi_pipeline.core.mining_pool import resolve_mining_pool
from aoi_pipeline.core.spec.baseline import baseline_spec
from aoi_pipeline.core.spec.validation import validate_spec
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.core.state import STATE_FILE, init_state
from aoi_pipeline.errors import (
    AoiPipelineError,
)

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


#: A child process that takes the workspace lock, says so, and holds it until killed.
HOLD_LOCK = """
import sys, time
from pathlib import Path
from aoi_pipeline.core.lock import WorkspaceLock, check_unlocked
WorkspaceLock(Path(sys.argv[1]), owner="nightly run").acquire()
print("locked", flush=True)
time.sleep(60)
"""


def hold_lock(scene: Scene) -> None:
    """Start a child process that holds the workspace lock (killed when the case ends); `$pid` names it."""
    child = subprocess.Popen([sys.executable, "-c", HOLD_LOCK, str(scene.ws.root)], stdout=subprocess.PIPE, text=True)
    scene.children.append(child)
    assert child.stdout is not None and child.stdout.readline().strip() == "locked"
    scene.values["pid"] = str(child.pid)
