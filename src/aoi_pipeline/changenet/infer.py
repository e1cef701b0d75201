"""Scoring with a trained checkpoint: `inference.csv`, TAO's evaluate metrics and pair embeddings.

All three actions load the checkpoint first and refuse a spec whose architecture keys differ from the
training spec stored in it, decode the CSV's images once, and run the network in batches (bf16 autocast on a
GPU; the head and the scores stay fp32). `inference.csv` holds every input column plus `siamese_score`
(softmax probability of the defect class, in [0, 1]), one row per input row in input order. `evaluation.json`
holds TAO's `test_acc`, `test_fpr`, `test_fnr`, `defect_acc` (percent of all rows, at `eval_margin`) and the
FAR at `reference.recall_pct` defect recall. `embeddings.npy` holds the L2-normalised pair descriptor (how the
pair looks and changes where test and golden differ most, `ChangeNetClassifier.describe`) of every row, and
`embeddings_index.csv` maps its rows (0-based `row_index`) back to the input columns, with each row's
`siamese_score` from the same forward pass.
"""

from __future__ import annotations

import contextlib
import io
import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from aoi_pipeline.changenet.checkpoints import load_checkpoint, require_matching_architecture
from aoi_pipeline.changenet.data import (
    ImageLayout,
    Normaliser,
    PairCache,
    build_pair_cache,
    normalisation,
    to_unit,
)
from aoi_pipeline.changenet.model import ChangeNetClassifier, ModelConfig
from aoi_pipeline.changenet.runtime_spec import ACTION_DATASET, RuntimeSpec
from aoi_pipeline.changenet.status_writer import RUNNING, StatusLog
from aoi_pipeline.core.dataset import DatasetCsv, is_defect, write_dataset_csv
from aoi_pipeline.core.dataset_validation import validate_dataset
from aoi_pipeline.core.far import ScoredRows, far_at_recall
from aoi_pipeline.core.files import atomic_write_bytes, atomic_write_json
from aoi_pipeline.errors import SpecError

log = logging.getLogger("aoi_pipeline.changenet")

SCORE_COLUMN = "siamese_score"
INFERENCE_CSV = "inference.csv"
EVALUATION_JSON = "evaluation.json"
EMBEDDINGS_NPY = "embeddings.npy"
EMBEDDINGS_INDEX = "embeddings_index.csv"
#: TAO's in-training fallback when `eval_margin` cannot threshold a probability.
DEFAULT_MARGIN = 0.5
#: `val_far` when validation lacks PASS or defect rows (TAO's worst-case sentinel).
FAR_SENTINEL = 100.0


# ------------------------------------------------------------------------------------ device and batches


def select_device(option: str) -> torch.device:
    """`reference.device` to a torch device; SpecError when CUDA is asked for but absent."""
    if option == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    device = torch.device(option)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise SpecError.at(
            "reference.device", f"{option!r} was asked for but no CUDA GPU is visible", "use auto or cpu"
        )
    return device


def configure_threads() -> int:
    """Intra-op threads: OMP_NUM_THREADS when set, else half the CPUs this process may use (at least one).

    The other half stays with the rest of the machine (the pipeline, its server, image decoding): on a busy
    2-core box two spinning OpenMP threads run a small network several times slower than one.
    """
    requested = os.environ.get("OMP_NUM_THREADS", "")
    if requested.isdigit() and int(requested) > 0:
        threads = int(requested)
    else:
        try:
            available = len(os.sched_getaffinity(0))
        except AttributeError:
            available = os.cpu_count() or 1
        threads = max(1, min(available // 2, 16))
    torch.set_num_threads(threads)
    with contextlib.suppress(RuntimeError):  # fixed once per process
        torch.set_num_interop_threads(1)
    return threads


def autocast_dtype(precision: Any, device: torch.device) -> torch.dtype | None:
    """bf16 autocast on a GPU unless `train.precision` asks for 32-bit; never on a CPU."""
    if device.type != "cuda":
        return None
    if precision is not None and str(precision).lower().replace("-true", "") in (
        "32",
        "64",
        "fp32",
        "float32",
    ):
        return None
    return torch.bfloat16


def prepare_input(unit_pairs: torch.Tensor, normaliser: Normaliser) -> tuple[torch.Tensor, torch.Tensor]:
    """Normalised (test, golden) batches, channels-last on a GPU for the convolution kernels."""
    pairs = normaliser(unit_pairs)
    test, golden = pairs[:, 0], pairs[:, 1]
    if pairs.device.type == "cuda":
        test = test.contiguous(memory_format=torch.channels_last)
        golden = golden.contiguous(memory_format=torch.channels_last)
    return test, golden


@dataclass(frozen=True)
class ForwardResult:
    """Scores (float64, input order), the mean loss when class weights were given, embeddings when asked."""

    scores: np.ndarray
    loss: float | None
    embeddings: np.ndarray | None


@torch.no_grad()
def forward_all(
    model: ChangeNetClassifier,
    cache: PairCache,
    normaliser: Normaliser,
    *,
    batch_size: int,
    amp: torch.dtype | None,
    class_weights: torch.Tensor | None = None,
    embeddings: bool = False,
) -> ForwardResult:
    """Run the model over a whole cache in order, without augmentation."""
    was_training = model.training
    model.eval()
    device = cache.pairs.device
    scores, features = [], []
    loss_sum = torch.zeros((), device=device)
    for start in range(0, len(cache), batch_size):
        pairs = cache.pairs[start : start + batch_size]
        test, golden = prepare_input(to_unit(pairs), normaliser)
        with torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
            head_output, _ = model(test, golden)
        scores.append(model.scores(head_output))
        if class_weights is not None:
            labels = cache.labels[start : start + batch_size]
            loss_sum += model.loss(head_output, labels, class_weights) * labels.shape[0]
        if embeddings:
            with torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
                descriptor = model.describe(test, golden)
            features.append(torch.nn.functional.normalize(descriptor.float(), dim=1))
    model.train(was_training)
    return ForwardResult(
        scores=torch.cat(scores).double().cpu().numpy(),
        loss=float(loss_sum.item()) / max(1, len(cache)) if class_weights is not None else None,
        embeddings=torch.cat(features).cpu().numpy().astype(np.float32) if embeddings else None,
    )


# ---------------------------------------------------------------------------------------------- metrics


def metric_margin(eval_margin: float) -> float:
    """The score threshold of the accuracy metrics: `eval_margin`, or 0.5 when it exceeds 1 (TAO's fallback
    for probabilities)."""
    return float(eval_margin) if 0 < float(eval_margin) <= 1.0 else DEFAULT_MARGIN


def aoi_metrics(scores: np.ndarray, defects: np.ndarray, margin: float) -> dict[str, float]:
    """TAO's AOIMetrics in percent: a row is called a defect when `score > margin`; false alarms and false
    negatives are shares of *all* rows, as TAO computes them."""
    flagged = scores > margin
    total = max(1, scores.size)
    n_defect = int(defects.sum())
    return {
        "total_accuracy": 100.0 * float(np.count_nonzero(flagged == defects)) / total,
        "defect_accuracy": 100.0 * float(np.count_nonzero(flagged & defects)) / n_defect if n_defect else 0.0,
        "false_alarm": 100.0 * float(np.count_nonzero(flagged & ~defects)) / total,
        "false_negative": 100.0 * float(np.count_nonzero(~flagged & defects)) / total,
    }


def far_at_full_recall(scores: np.ndarray, labels: tuple[str, ...]) -> float:
    """`val_far`: percent of PASS rows scoring at least the weakest defect; 100.0 when a class is missing."""
    rows = ScoredRows(labels=labels, scores=scores)
    if rows.is_pass.all() or not rows.is_pass.any():
        return FAR_SENTINEL
    return far_at_recall(rows, 100.0).far_pct


# ---------------------------------------------------------------------------------------------- actions


@dataclass(frozen=True)
class ScoringJob:
    """Everything an inference, evaluate or embed run needs, checked before anything is written."""

    spec: RuntimeSpec
    checkpoint_key: str
    checkpoint_path: Path
    checkpoint: dict[str, Any]
    dataset: DatasetCsv
    images_dir: Path
    batch_size: int

    @property
    def layout(self) -> ImageLayout:
        return ImageLayout.from_dict(self.checkpoint["layout"])


def plan_scoring(spec: RuntimeSpec) -> ScoringJob:
    """Load and check the checkpoint, its architecture against the spec, and the CSV and its images."""
    action = spec.action
    if action == "embed":
        checkpoint_key, csv_key, images_key = "embed.checkpoint", "embed.csv_path", "embed.images_dir"
        batch_size = int(spec.value("embed.batch_size")) or int(spec.value("dataset.classify.batch_size"))
    else:
        block = f"dataset.classify.{ACTION_DATASET[action]}"
        checkpoint_key, csv_key, images_key = (
            f"{action}.checkpoint",
            f"{block}.csv_path",
            f"{block}.images_dir",
        )
        batch_size = spec.value(f"{action}.batch_size")
        if not isinstance(batch_size, int) or batch_size < 1:
            batch_size = int(spec.value("dataset.classify.batch_size"))
    path = Path(spec.value(checkpoint_key))
    checkpoint = load_checkpoint(path, key=checkpoint_key)
    require_matching_architecture(checkpoint, spec.tao_spec(), key=checkpoint_key)
    stored_model_config(checkpoint, key=checkpoint_key)
    layout = ImageLayout.from_dict(checkpoint["layout"])
    images_dir = Path(spec.value(images_key))
    dataset = validate_dataset(
        Path(spec.value(csv_key)),
        images_dir=images_dir,
        lights=layout.lights,
        image_ext=layout.image_ext,
        mode="evaluate" if action == "evaluate" else "inference",
    )
    return ScoringJob(spec, checkpoint_key, path, checkpoint, dataset, images_dir, batch_size)


def stored_model_config(checkpoint: dict[str, Any], *, key: str) -> ModelConfig:
    """The network a checkpoint was trained with; SpecError naming `key` when this runtime cannot build it."""
    try:
        return ModelConfig.from_dict(checkpoint["model_config"])
    except ValueError as error:
        raise SpecError.at(key, str(error), "point the key at a checkpoint trained by this runtime") from None


def load_model(checkpoint: dict[str, Any], device: torch.device) -> ChangeNetClassifier:
    model = ChangeNetClassifier(ModelConfig.from_dict(checkpoint["model_config"]))
    model.load_state_dict(checkpoint["state_dict"])
    model = model.to(device)
    if device.type == "cuda":
        # Module.to takes memory_format at run time; torch's overloads leave it out.
        model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
    return model.eval()


def _score(
    job: ScoringJob, *, embeddings: bool = False, class_weights: bool = False
) -> tuple[ForwardResult, PairCache]:
    spec = job.spec
    device = select_device(spec.value("reference.device"))
    configure_threads()
    cache = build_pair_cache(
        job.dataset,
        images_dir=job.images_dir,
        layout=job.layout,
        device=device,
        workers=int(spec.value("dataset.classify.workers")),
    )
    mean, std = normalisation(
        spec.value("dataset.classify.augmentation_config.rgb_input_mean"),
        spec.value("dataset.classify.augmentation_config.rgb_input_std"),
        cache.layout,
    )
    model = load_model(job.checkpoint, device)
    weights = torch.tensor(spec.value("train.classify.cls_weight"), dtype=torch.float32, device=device)
    result = forward_all(
        model,
        cache,
        Normaliser(mean, std, device),
        batch_size=job.batch_size,
        amp=autocast_dtype(spec.value("train.precision"), device),
        class_weights=weights if class_weights else None,
        embeddings=embeddings,
    )
    log.info("scored %d rows of %s with %s on %s", len(cache), job.dataset.path, job.checkpoint_path, device)
    return result, cache


def run_inference(job: ScoringJob, status: StatusLog) -> Path:
    """Write `inference.csv`: the input columns plus `siamese_score`, one row per input row, in order."""
    result, _ = _score(job)
    columns = list(job.dataset.columns)
    if SCORE_COLUMN not in columns:
        columns.append(SCORE_COLUMN)
    rows = [
        dict(row, **{SCORE_COLUMN: format(float(s), ".9g")})
        for row, s in zip(job.dataset.rows, result.scores, strict=True)
    ]
    path = job.spec.results_dir / INFERENCE_CSV
    write_dataset_csv(path, columns, rows)
    status.write(RUNNING, f"Inference results written to {path}.", rows=len(rows))
    return path


def evaluation_metrics(job: ScoringJob, scores: np.ndarray) -> dict[str, Any]:
    """TAO's test metrics at `eval_margin` plus FAR at `reference.recall_pct` recall."""
    labels = tuple(row["label"] for row in job.dataset.rows)
    defects = np.array([is_defect(label) for label in labels], dtype=bool)
    margin = metric_margin(job.spec.value("model.classify.eval_margin"))
    aoi = aoi_metrics(scores, defects, margin)
    recall = float(job.spec.value("reference.recall_pct"))
    far = far_at_recall(ScoredRows(labels=labels, scores=scores), recall)
    return {
        "test_acc": aoi["total_accuracy"],
        "test_fpr": aoi["false_alarm"],
        "test_fnr": aoi["false_negative"],
        "defect_acc": aoi["defect_accuracy"],
        "eval_margin": margin,
        "far_pct": far.far_pct,
        "recall_pct": far.recall_pct,
        "requested_recall_pct": far.requested_recall_pct,
        "far_threshold": far.threshold,
        "rows": int(scores.size),
        "n_pass": far.n_pass,
        "n_defect": far.n_defect,
        "checkpoint": str(job.checkpoint_path),
        "csv_path": str(job.dataset.path),
    }


def run_evaluate(job: ScoringJob, status: StatusLog) -> dict[str, Any]:
    """Write `evaluation.json` and TAO's 'Test metrics generated.' status line."""
    result, _ = _score(job)
    metrics = evaluation_metrics(job, result.scores)
    atomic_write_json(job.spec.results_dir / EVALUATION_JSON, metrics)
    kpi = {key: metrics[key] for key in ("test_acc", "test_fpr", "test_fnr", "defect_acc", "far_pct")}
    status.write(RUNNING, "Test metrics generated.", kpi=kpi)
    return metrics


def run_embed(job: ScoringJob, status: StatusLog) -> Path:
    """Write `embeddings.npy` (float32 [N, D], unit rows) and `embeddings_index.csv`."""
    result, _ = _score(job, embeddings=True)
    assert result.embeddings is not None
    path = job.spec.results_dir / EMBEDDINGS_NPY
    buffer = _npy_bytes(result.embeddings)
    path.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, buffer)
    # The score of the same forward pass: mining ranks a target's neighbours by how wrong the model is on them.
    index_rows = [
        {**row, "row_index": str(i), SCORE_COLUMN: repr(float(score))}
        for i, (row, score) in enumerate(zip(job.dataset.rows, result.scores, strict=True))
    ]
    columns = ["row_index", *(c for c in job.dataset.columns if c != SCORE_COLUMN), SCORE_COLUMN]
    write_dataset_csv(job.spec.results_dir / EMBEDDINGS_INDEX, columns, index_rows)
    status.write(RUNNING, f"Embeddings written to {path}.", rows=len(index_rows), dim=int(result.embeddings.shape[1]))
    return path


def _npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    np.save(buffer, array, allow_pickle=False)
    return buffer.getvalue()
