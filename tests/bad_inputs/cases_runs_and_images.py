"""Catalogue cases: bad run names, lock and run-owned keys, and broken image folders.
Importing the module registers them."""

from __future__ import annotations

from catalogue import (
    Scene,
    case,
    hold_lock,
    load_pipeline_config,
)

from aoi_pipeline.core.lock import check_unlocked
from aoi_pipeline.core.workspace import check_workspace
from aoi_pipeline.errors import (
    ConfigError,
    DatasetError,
    WorkspaceLockedError,
)
from aoi_pipeline.pipeline.layout import RunLayout, check_run_name

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
    hold_lock(scene)


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
