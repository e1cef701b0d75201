"""Training for the reference runtime, with TAO's outputs, schedule and failure rules.

`plan_training` checks everything that can be checked before a byte is written: the datasets and their
images, the warm-start or resume checkpoint and its architecture, and that the results directory holds no
checkpoint of an earlier run (TAO's Lightning would silently resume it; here that is an error naming both
ways out). `run_training` then writes `experiment.yaml`, `train.log`, `status.json`, the periodic
`model_epoch_<EEE>_step_<SSS>.pth` files, `changenet_model_classify_latest.pth` after every epoch and the
checkpointer's best file, validating every `validation_interval` epochs (`val_loss`, `val_acc`, `val_fpr`,
`val_far`). The learning rate follows TAO's policies (`changenet.optim`). A resume restores weights,
optimiser state, epoch and step, and fails when nothing is left to train, instead of reporting success after zero steps.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from aoi_pipeline.changenet.checkpoints import (
    LATEST_NAME,
    any_checkpoints,
    best_name,
    load_checkpoint,
    periodic_checkpoints,
    periodic_name,
    require_matching_architecture,
    save_checkpoint,
)
from aoi_pipeline.changenet.data import (
    Augmentation,
    ImageLayout,
    Normaliser,
    PairCache,
    augment,
    build_pair_cache,
    epoch_order,
    normalisation,
    ordered_lights,
)
from aoi_pipeline.changenet.infer import (
    aoi_metrics,
    autocast_dtype,
    configure_threads,
    far_at_full_recall,
    forward_all,
    metric_margin,
    prepare_input,
    select_device,
    stored_model_config,
)
from aoi_pipeline.changenet.model import ChangeNetClassifier, ModelConfig, describe_network
from aoi_pipeline.changenet.optim import lr_factor, make_optimizer
from aoi_pipeline.changenet.runtime_spec import RuntimeSpec
from aoi_pipeline.changenet.status_writer import RUNNING, STARTED, StatusLog, duration
from aoi_pipeline.core.dataset import DatasetCsv
from aoi_pipeline.core.dataset_validation import validate_dataset
from aoi_pipeline.core.files import atomic_write_json
from aoi_pipeline.core.spec.yaml_io import dump_spec
from aoi_pipeline.errors import RuntimeJobError, SpecError

log = logging.getLogger("aoi_pipeline.changenet")

EXPERIMENT_YAML = "experiment.yaml"
TRAIN_LOG = "train.log"
#: What the trained network is (the reference runtime's own output; a TAO container writes no such file).
MODEL_CARD = "reference_model.json"
RESUME_KEY = "train.resume_training_checkpoint_path"
WARM_KEY = "train.pretrained_model_path"


def model_config_from_spec(spec: RuntimeSpec, in_channels: int) -> ModelConfig:
    return ModelConfig(
        in_channels=in_channels,
        difference_module=spec.value("model.classify.difference_module"),
        num_scales=int(spec.value("model.classify.learnable_difference_modules")),
        embed_dec=int(spec.value("model.classify.embed_dec")),
        top_k=int(spec.value("model.classify.embedding_vectors")),
        loss=spec.value("train.classify.loss"),
        margin=float(spec.value("model.classify.train_margin_euclid")),
        backbone=str(spec.value("reference.backbone")),
        register_fraction=float(spec.value("reference.register_fraction")),
    )


def layout_from_spec(spec: RuntimeSpec) -> ImageLayout:
    """The input layout the spec asks for; whether it is colour is decided from the training images."""
    return ImageLayout(
        lights=ordered_lights(spec.value("dataset.classify.input_map")),
        image_ext=spec.value("dataset.classify.image_ext"),
        width=int(spec.value("dataset.classify.image_width")),
        height=int(spec.value("dataset.classify.image_height")),
    )


def _compile_mode(option: bool | str | None) -> bool | str:
    """`reference.compile` as TrainStep wants it: False, True (default mode) or a torch.compile mode name."""
    if option in (None, False, "off"):
        return False
    return True if option in (True, "default") else str(option)


class TrainStep:
    """One optimiser step on a batch of cached uint8 pairs: device augmentation, autocast, backward, step.

    Shared by the trainer and the throughput benchmark, so the benchmark measures the real step.
    """

    def __init__(
        self,
        model: ChangeNetClassifier,
        optimizer: torch.optim.Optimizer,
        *,
        augmentation: Augmentation,
        normaliser: Normaliser,
        class_weights: torch.Tensor,
        amp: torch.dtype | None,
        color: bool,
        compiled: bool | str = False,
    ) -> None:
        self.model, self.optimizer = model, optimizer
        self.augmentation, self.normaliser = augmentation, normaliser
        self.class_weights, self.amp, self.color = class_weights, amp, color
        # `compiled` may name a torch.compile mode (e.g. "reduce-overhead" for CUDA graphs).
        mode = compiled if isinstance(compiled, str) else None
        self.forward = torch.compile(model, mode=mode) if compiled else model

    def __call__(self, pairs: torch.Tensor, labels: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
        test, golden = prepare_input(
            augment(pairs, self.augmentation, generator, color_channels=self.color), self.normaliser
        )
        device_type = pairs.device.type
        with torch.autocast(device_type=device_type, dtype=self.amp or torch.float32, enabled=self.amp is not None):
            head_output, _ = self.forward(test, golden)
        loss = self.model.loss(head_output, labels, self.class_weights)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()


# ------------------------------------------------------------------------------------------------- plan


@dataclass(frozen=True)
class TrainJob:
    """A checked training run: datasets, the checkpoint to start from, and where outputs go."""

    spec: RuntimeSpec
    train_set: DatasetCsv
    validation_set: DatasetCsv
    layout: ImageLayout
    resume: dict[str, Any] | None = None
    warm_start: dict[str, Any] | None = None

    @property
    def results_dir(self) -> Path:
        return self.spec.results_dir

    @property
    def start_epoch(self) -> int:
        if self.resume is None:
            return 0
        return int(self.resume["epoch"]) + (1 if self.resume.get("epoch_complete", True) else 0)


def plan_training(spec: RuntimeSpec) -> TrainJob:
    """Check datasets, images, start checkpoints and the results directory; nothing is written."""
    layout = layout_from_spec(spec)
    common: dict[str, Any] = {"lights": layout.lights, "image_ext": layout.image_ext}
    train_set = validate_dataset(
        Path(spec.value("dataset.classify.train_dataset.csv_path")),
        images_dir=Path(spec.value("dataset.classify.train_dataset.images_dir")),
        mode="train",
        batch_size=int(spec.value("dataset.classify.batch_size")),
        **common,
    )
    validation_set = validate_dataset(
        Path(spec.value("dataset.classify.validation_dataset.csv_path")),
        images_dir=Path(spec.value("dataset.classify.validation_dataset.images_dir")),
        mode="evaluate",
        **common,
    )
    resume = _start_checkpoint(spec, RESUME_KEY)
    warm = None if resume is not None else _start_checkpoint(spec, WARM_KEY)
    job = TrainJob(spec, train_set, validation_set, layout, resume=resume, warm_start=warm)
    num_epochs = int(spec.value("train.num_epochs"))
    if resume is not None and job.start_epoch >= num_epochs:
        raise SpecError.at(
            f"{RESUME_KEY}={spec.value(RESUME_KEY)}",
            f"nothing is left to train: the checkpoint finished epoch {job.start_epoch} of train.num_epochs "
            f"{num_epochs}, so a resume would run zero steps",
            f"raise train.num_epochs above {job.start_epoch} to continue this run, or start a new run from "
            f"it "
            f"with {WARM_KEY}=<that checkpoint> (fresh epoch counter) and an empty train.results_dir",
        )
    existing = any_checkpoints(spec.results_dir)
    if resume is None and existing:
        listed = ", ".join(p.name for p in existing[:3]) + (" ..." if len(existing) > 3 else "")
        raise SpecError.at(
            f"train.results_dir={spec.results_dir}",
            f"already holds checkpoints of an earlier run ({listed}); they are never resumed silently",
            f"point train.results_dir at a fresh directory, or continue that run with "
            f"{RESUME_KEY}={spec.results_dir / LATEST_NAME}",
        )
    return job


def _start_checkpoint(spec: RuntimeSpec, key: str) -> dict[str, Any] | None:
    path = spec.value(key)
    if not isinstance(path, str) or not path.strip():
        return None
    checkpoint = load_checkpoint(Path(path), key=key)
    require_matching_architecture(checkpoint, spec.tao_spec(), key=key)
    return checkpoint


# -------------------------------------------------------------------------------------------------- run


@dataclass
class _Best:
    """The checkpointer's kept files (value, path), best first."""

    mode: str
    keep: int
    files: list[tuple[float, Path]] = field(default_factory=list)

    def offer(self, value: float) -> bool:
        if not math.isfinite(value):
            return False
        if len(self.files) < self.keep:
            return True
        worst = self.files[-1][0]
        return value < worst if self.mode == "min" else value > worst

    def add(self, value: float, path: Path) -> list[Path]:
        """Record a new file; return the files that fell out of the top k."""
        self.files.append((value, path))
        self.files.sort(key=lambda item: item[0], reverse=self.mode == "max")
        dropped = [p for _, p in self.files[self.keep :] if p != path]
        self.files = self.files[: self.keep]
        return dropped


@contextmanager
def _train_log(results_dir: Path) -> Iterator[logging.Handler]:
    handler = logging.FileHandler(results_dir / TRAIN_LOG, mode="a", encoding="utf-8")
    handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(message)s"))
    log.addHandler(handler)
    previous = log.level
    log.setLevel(logging.INFO)
    try:
        yield handler
    finally:
        log.removeHandler(handler)
        log.setLevel(previous)
        handler.close()


@dataclass(frozen=True)
class TrainOutcome:
    """What a finished run wrote: every periodic checkpoint, the latest file, the best file, last KPIs."""

    periodic: tuple[Path, ...]
    latest: Path
    best: Path | None
    kpi: dict[str, float]
    steps: int


def run_training(job: TrainJob, status: StatusLog, *, warning: str | None = None) -> TrainOutcome:
    """Train as the spec says; RuntimeJobError when the loss stops being finite."""
    spec = job.spec
    results = job.results_dir
    results.mkdir(parents=True, exist_ok=True)
    with _train_log(results) as train_log:
        if warning:  # already printed on stderr; recorded in train.log only
            train_log.handle(log.makeRecord(log.name, logging.WARNING, __file__, 0, warning, (), None))
        dump_spec(spec.spec, results / EXPERIMENT_YAML)
        return _Trainer(job, status).run()


class _Trainer:
    def __init__(self, job: TrainJob, status: StatusLog) -> None:
        self.job, self.spec, self.status = job, job.spec, status
        spec = job.spec
        self.num_epochs = int(spec.value("train.num_epochs"))
        self.batch_size = int(spec.value("dataset.classify.batch_size"))
        self.validation_interval = int(spec.value("train.validation_interval"))
        self.checkpoint_interval = int(spec.value("train.checkpoint_interval"))
        self.checkpoint_unit = spec.value("train.checkpoint_interval_unit")
        seed = int(spec.value("train.seed"))
        # TAO reads a negative seed as "unseeded".
        self.seed = seed if seed >= 0 else int(time.time_ns() % 2**31)
        self.device = select_device(spec.value("reference.device"))
        self.threads = configure_threads()
        cudnn = spec.section("train.cudnn")
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = bool(cudnn.get("benchmark", True))
            torch.backends.cudnn.deterministic = bool(cudnn.get("deterministic", False))
        self.periodic: list[Path] = []
        self.kpi: dict[str, float] = {}
        start = job.resume or job.warm_start
        self.global_step = int(job.resume["global_step"]) if job.resume else 0
        self.best = _Best(
            mode=str(spec.value("train.checkpointer.mode")),
            keep=int(spec.value("train.checkpointer.save_top_k")),
        )
        self.start_layout = ImageLayout.from_dict(start["layout"]) if start else None
        self.layout = self.start_layout or job.layout

    # -- setup

    def _caches(self) -> tuple[PairCache, PairCache]:
        spec, job = self.spec, self.job
        workers = int(spec.value("dataset.classify.workers"))
        layout = self.start_layout or job.layout
        started = time.perf_counter()
        train = build_pair_cache(
            job.train_set,
            images_dir=Path(spec.value("dataset.classify.train_dataset.images_dir")),
            layout=layout,
            device=self.device,
            detect_color=self.start_layout is None,
            workers=workers,
        )
        validation = build_pair_cache(
            job.validation_set,
            images_dir=Path(spec.value("dataset.classify.validation_dataset.images_dir")),
            layout=train.layout,
            device=self.device,
            workers=workers,
        )
        log.info(
            "decoded %d training and %d validation pairs (%s, %d channel(s), %dx%d) in %.1f s onto %s",
            len(train),
            len(validation),
            "colour" if train.layout.color else "grey",
            train.layout.channels,
            train.layout.width,
            train.layout.height,
            time.perf_counter() - started,
            self.device,
        )
        return train, validation

    def _model(self, layout: ImageLayout) -> ChangeNetClassifier:
        config = model_config_from_spec(self.spec, layout.channels)
        torch.manual_seed(self.seed)
        model = ChangeNetClassifier(config)
        start = self.job.resume or self.job.warm_start
        if start is not None:
            key = RESUME_KEY if self.job.resume else WARM_KEY
            stored = stored_model_config(start, key=key)
            if stored != config:
                raise SpecError.at(
                    key,
                    f"the checkpoint's network {stored} differs from the spec's {config}",
                    "use a checkpoint trained with this spec's architecture",
                )
            model.load_state_dict(start["state_dict"])
        model = model.to(self.device)
        if self.device.type == "cuda":
            # Module.to takes memory_format at run time; torch's overloads leave it out.
            model = model.to(memory_format=torch.channels_last)  # type: ignore[call-overload]
        return model

    # -- loop

    def run(self) -> TrainOutcome:
        spec, job, status = self.spec, self.job, self.status
        status.write(STARTED, "Starting Training Loop.", epoch=job.start_epoch, max_epoch=self.num_epochs - 1)
        train, validation = self._caches()
        self.layout = train.layout
        model = self._model(train.layout)
        optimizer = make_optimizer(model, spec, self.device)
        if job.resume is not None:
            optimizer.load_state_dict(job.resume["optimizer"])
        mean, std = normalisation(
            spec.value("dataset.classify.augmentation_config.rgb_input_mean"),
            spec.value("dataset.classify.augmentation_config.rgb_input_std"),
            train.layout,
        )
        normaliser = Normaliser(mean, std, self.device)
        weights = torch.tensor(spec.value("train.classify.cls_weight"), dtype=torch.float32, device=self.device)
        amp = autocast_dtype(spec.value("train.precision"), self.device)
        step = TrainStep(
            model,
            optimizer,
            augmentation=Augmentation.from_spec(
                spec.section("dataset.classify.augmentation_config"),
                shift_fraction=float(spec.value("reference.shift_fraction")),
            ),
            normaliser=normaliser,
            class_weights=weights,
            amp=amp,
            color=train.layout.color,
            compiled=_compile_mode(spec.value("reference.compile")),
        )
        self._describe(model, amp)
        steps_started = self.global_step
        latest = job.results_dir / LATEST_NAME
        for epoch in range(job.start_epoch, self.num_epochs):
            started = time.perf_counter()
            train_loss, steps = self._train_epoch(model, optimizer, step, train, epoch)
            self._report_epoch(epoch, train_loss, steps, time.perf_counter() - started)
            done = epoch + 1
            if done % self.validation_interval == 0:
                self._validate(model, validation, normaliser, weights, amp, epoch, optimizer)
            if self.checkpoint_unit != "step" and done % self.checkpoint_interval == 0:
                self._save_periodic(model, optimizer, epoch, complete=True)
            save_checkpoint(latest, self._payload(model, optimizer, epoch, complete=True))
        if self.global_step == steps_started:
            raise RuntimeJobError.at(str(job.results_dir), "training ran zero steps", "check train.num_epochs")
        return TrainOutcome(
            periodic=tuple(self.periodic),
            latest=latest,
            best=self.best.files[0][1] if self.best.files else None,
            kpi=self.kpi,
            steps=self.global_step - steps_started,
        )

    def _describe(self, model: ChangeNetClassifier, amp: torch.dtype | None) -> None:
        """Write the model card beside the checkpoints and log what is trained, and how."""
        parameters = sum(p.numel() for p in model.parameters())
        atomic_write_json(
            self.job.results_dir / MODEL_CARD,
            {
                "runtime": "reference",
                "description": describe_network(model.config, parameters),
                "parameters": parameters,
                "model_config": model.config.to_dict(),
            },
        )
        log.info(
            "training %s (%d parameters) for epochs %d..%d, batch %d, %s, %d CPU thread(s)",
            model.config,
            parameters,
            self.job.start_epoch,
            self.num_epochs - 1,
            self.batch_size,
            f"autocast {amp}" if amp else "fp32",
            self.threads,
        )

    def _train_epoch(
        self,
        model: ChangeNetClassifier,
        optimizer: torch.optim.Optimizer,
        step: TrainStep,
        train: PairCache,
        epoch: int,
    ) -> tuple[float, int]:
        """One epoch of optimisation steps; returns the mean training loss and the number of steps."""
        base_lr, policy = float(self.spec.value("train.optim.lr")), self.spec.value("train.optim.policy")
        for group in optimizer.param_groups:
            group["lr"] = base_lr * lr_factor(policy, epoch, self.num_epochs)
        batch = min(self.batch_size, len(train))
        generator = torch.Generator(device=self.device).manual_seed(self.seed * 1009 + epoch)
        fpratio = float(self.spec.value("dataset.classify.fpratio_sampling"))
        order = epoch_order(train.labels, fpratio, batch, generator)
        loss_sum = torch.zeros((), device=self.device)
        steps = order.numel() // batch
        model.train()
        for index in range(steps):
            rows = order[index * batch : (index + 1) * batch]
            loss_sum += step(train.pairs[rows], train.labels[rows], generator)
            self.global_step += 1
            if self.checkpoint_unit == "step" and self.global_step % self.checkpoint_interval == 0:
                self._save_periodic(model, optimizer, epoch, complete=False)
        train_loss = float(loss_sum.item()) / max(1, steps)
        if not math.isfinite(train_loss):
            raise RuntimeJobError.at(
                f"epoch {epoch} (0-based), step {self.global_step}",
                f"the training loss is {train_loss}: training diverged",
                "lower train.optim.lr (e.g. by 10x) or train.classify.cls_weight[1], then train again",
            )
        return train_loss, steps

    def _report_epoch(self, epoch: int, loss: float, steps: int, elapsed: float) -> None:
        # 0-based epochs like the checkpoint files, so a validation's epoch names its model_epoch_<EEE> file.
        self.status.write(
            RUNNING,
            "Training loop in progress",
            epoch=epoch,
            max_epoch=self.num_epochs - 1,
            time_per_epoch=duration(elapsed),
            eta=duration(elapsed * (self.num_epochs - epoch - 1)),
            kpi={"train_loss": loss},
        )
        log.info("epoch %d/%d: train_loss %.4f, %d steps, %.2f s", epoch + 1, self.num_epochs, loss, steps, elapsed)

    def _validate(
        self,
        model: ChangeNetClassifier,
        validation: PairCache,
        normaliser: Normaliser,
        weights: torch.Tensor,
        amp: torch.dtype | None,
        epoch: int,
        optimizer: torch.optim.Optimizer,
    ) -> None:
        result = forward_all(
            model, validation, normaliser, batch_size=max(self.batch_size, 64), amp=amp, class_weights=weights
        )
        labels = tuple(row["label"] for row in validation.dataset.rows)
        defects = validation.labels.bool().cpu().numpy()
        aoi = aoi_metrics(result.scores, defects, metric_margin(self.spec.value("model.classify.eval_margin")))
        assert result.loss is not None
        self.kpi = {
            "val_loss": result.loss,
            "val_acc": aoi["total_accuracy"],
            "val_fpr": aoi["false_alarm"],
            "val_far": far_at_full_recall(result.scores, labels),
        }
        self.status.write(RUNNING, "Eval metrics generated.", epoch=epoch, max_epoch=self.num_epochs - 1, kpi=self.kpi)
        log.info(
            "epoch %d/%d: %s",
            epoch + 1,
            self.num_epochs,
            ", ".join(f"{k} {v:.4f}" for k, v in self.kpi.items()),
        )
        if self.spec.value("train.checkpointer.enable_topk"):
            self._offer_best(model, optimizer, epoch)

    def _offer_best(self, model: ChangeNetClassifier, optimizer: torch.optim.Optimizer, epoch: int) -> None:
        monitor = str(self.spec.value("train.checkpointer.monitor"))
        value = self.kpi[monitor]
        if not self.best.offer(value):
            return
        values = {"epoch": epoch, "step": self.global_step, **self.kpi}
        name = best_name(
            str(self.spec.value("train.checkpointer.filename")),
            values,
            auto_insert_metric_name=bool(self.spec.value("train.checkpointer.auto_insert_metric_name")),
        )
        directory = self.spec.value("train.checkpointer.dirpath") or self.job.results_dir
        path = Path(directory) / name
        path.parent.mkdir(parents=True, exist_ok=True)
        save_checkpoint(path, self._payload(model, optimizer, epoch, complete=True))
        for dropped in self.best.add(value, path):
            dropped.unlink(missing_ok=True)
        log.info("best %s %.4f: %s", monitor, value, path.name)

    def _save_periodic(
        self, model: ChangeNetClassifier, optimizer: torch.optim.Optimizer, epoch: int, *, complete: bool
    ) -> None:
        path = self.job.results_dir / periodic_name(epoch, self.global_step)
        save_checkpoint(path, self._payload(model, optimizer, epoch, complete=complete))
        if self.spec.value("train.checkpointer.replace_periodic"):
            for older in periodic_checkpoints(self.job.results_dir):
                if older != path:
                    older.unlink(missing_ok=True)
            self.periodic = []
        self.periodic.append(path)
        log.info("checkpoint %s", path.name)

    def _payload(
        self, model: ChangeNetClassifier, optimizer: torch.optim.Optimizer, epoch: int, *, complete: bool
    ) -> dict[str, Any]:
        return {
            "model_config": model.config.to_dict(),
            "layout": self.layout.to_dict(),
            "state_dict": model.state_dict(),
            "optimizer": optimizer.state_dict(),
            "epoch": epoch,
            "epoch_complete": complete,
            "global_step": self.global_step,
            "kpi": dict(self.kpi),
            "spec": self.spec.spec,
        }
