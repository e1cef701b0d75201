"""Catalogue cases: bad dataset CSVs: encodings, delimiters, columns, rows, paths and labels.
Importing the module registers them."""

from __future__ import annotations

from catalogue import (
    Scene,
    case,
    check_train_validation_leakage,
    two_good_rows,
    validate_training,
    write_training,
)

from aoi_pipeline.errors import (
    DatasetError,
    LeakageError,
)

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
