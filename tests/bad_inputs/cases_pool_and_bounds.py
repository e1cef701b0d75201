"""Catalogue cases: bad mining pools, and values past their bounds, sizes and paths outside the workspace.
Importing the module registers them."""

from __future__ import annotations

from catalogue import (
    Scene,
    case,
    load_pipeline_config,
    resolve_pool,
    two_good_rows,
    validate_spec_file,
    validate_training,
    write_pool,
    write_spec,
    write_training,
)

from aoi_pipeline.errors import (
    ConfigError,
    DatasetError,
    SpecError,
)

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
