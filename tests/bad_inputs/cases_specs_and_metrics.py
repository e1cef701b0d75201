"""Catalogue cases: bad experiment specs, KPI targets and inference CSVs. Importing the module registers them."""

from __future__ import annotations

from catalogue import (
    Scene,
    case,
    score_inference_csv,
    validate_spec_file,
    write_inference,
    write_spec,
)

from aoi_pipeline.core.metric_target import parse_target
from aoi_pipeline.core.spec.overrides import apply_overrides
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.errors import (
    MetricContractError,
    SpecError,
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
