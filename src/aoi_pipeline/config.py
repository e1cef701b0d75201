"""The pipeline configuration: one YAML file, loaded into strict pydantic models.

A user writes `pipeline.yaml` once per line/product: where the workspace is, which platform runs the TAO
jobs, which images, the KPI target, and the budgets of Phase 1 AutoML, the Phase 2 DEFT loop and Phase 3
refinement. Unknown keys are errors (a typo must not silently fall back to a default), and every error names
the file, the dotted key and the fix. Defaults are the small demo budget, so a config with only `workspace`
runs end to end on a laptop.
"""

from __future__ import annotations

import re
import reprlib
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, StrictBool, ValidationError, field_validator, model_validator

from aoi_pipeline.core.publish_manifest import normalise_prefix
from aoi_pipeline.core.spec.schema import MAX_BATCH_SIZE, MAX_EPOCHS
from aoi_pipeline.core.spec.yaml_io import load_yaml_text
from aoi_pipeline.errors import ConfigError, Problem
from aoi_pipeline.jobs.gpu import is_gpu_share

DEFAULT_TAO_PYT_IMAGE = "nvcr.io/nvidia/tao/tao-toolkit:7.1.0-pyt"
DEFAULT_TAO_DS_IMAGE = "nvcr.io/nvidia/tao/tao-toolkit:7.1.0-data-services"
DEFAULT_ANOMALYGEN_IMAGE = "nvcr.io/nvidia/paidf-anomalygen:1.0.1"

# Where jobs can run: `local` (processes of the flow run) and the work-pool platforms whose base job template,
# worker and `tao-job/<platform>` deployment exist. A platform joins this list when it is built; until then a
# config naming it is refused rather than accepted and run somewhere else.
PLATFORMS: tuple[str, ...] = ("local", "docker", "kubernetes", "slurm")
PLANNED_PLATFORMS: tuple[str, ...] = ()
# Platforms whose GPUs live on nodes the pipeline's own machine does not see: `gpus: auto` means the pool's GPUs.
REMOTE_GPU_PLATFORMS: tuple[str, ...] = ("kubernetes", "slurm")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class Images(_Strict):
    """Container image per kind of job. The local reference runtime records them but runs no container."""

    train: str = DEFAULT_TAO_PYT_IMAGE
    inference: str = DEFAULT_TAO_PYT_IMAGE
    embed: str = DEFAULT_TAO_DS_IMAGE
    sdg: str = DEFAULT_ANOMALYGEN_IMAGE


class DatasetSettings(_Strict):
    """How CSV rows map to image files: `{dir}/{object_name}_{light}{image_ext}`."""

    lights: tuple[str, ...] = ("SolderLight",)
    image_ext: str = ".png"

    @field_validator("image_ext")
    @classmethod
    def _dotted(cls, value: str) -> str:
        value = value.strip()
        return value if value.startswith(".") else f".{value}"


class SearchParameter(_Strict):
    """One searchable hyperparameter: a float/int range (optionally log-scaled) or a list of choices."""

    type: Literal["float", "int", "categorical"] = "float"
    low: float | None = None
    high: float | None = None
    log: bool = False
    choices: tuple[Any, ...] | None = None

    @model_validator(mode="after")
    def _complete(self) -> SearchParameter:
        if self.type == "categorical":
            if not self.choices:
                raise ValueError("a categorical parameter needs a non-empty 'choices' list")
        elif self.low is None or self.high is None or self.low >= self.high:
            raise ValueError("a float/int parameter needs low < high")
        elif self.log and self.low <= 0:
            raise ValueError("a log-scaled parameter needs low > 0")
        return self


def _no_run_owned_keys(overrides: tuple[str, ...]) -> tuple[str, ...]:
    """Refuse overrides of a key the pipeline sets for every job: accepted, they would be silently ignored."""
    for text in overrides:
        key = str(text).partition("=")[0].strip()
        if key == "results_dir" or key.endswith(".results_dir"):
            raise ValueError(
                f"{key} is set by the pipeline for every job (each job writes into its own folder of the run "
                "directory, <results_root>/<run name>/), so this override would be ignored"
            )
    return overrides


class AutomlSettings(_Strict):
    """Budget and search space of one AutoML phase (Phase 1 or Phase 3)."""

    enabled: StrictBool = True
    recommendations: Annotated[int, Field(ge=1, le=200, strict=True)] = 3
    parallel: Annotated[int, Field(ge=1, le=64, strict=True)] = 1
    num_epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS, strict=True)] = 2
    batch_size: Annotated[int, Field(ge=2, le=MAX_BATCH_SIZE, strict=True)] = 16
    seed: Annotated[int, Field(ge=0, le=2**32 - 1, strict=True)] = 0
    # Replace or add ranges by spec key; a key mapped to null is removed from the search.
    search_space: dict[str, SearchParameter | None] = Field(default_factory=dict)
    # Dotted spec overrides applied to every trial (e.g. image size for a quick run).
    spec_overrides: tuple[str, ...] = ()
    # Stop hopeless trials from their per-epoch validation FAR (status.json): Optuna's median rule or
    # successive halving; no pruning before `pruner_warmup_epochs` validations.
    pruner: Literal["none", "median", "successive_halving"] = "none"
    pruner_warmup_epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS, strict=True)] = 1
    # A GPU-hour budget instead of a fixed number of recommendations (set one of the two).
    max_gpu_hours: Annotated[float, Field(gt=0, le=100000)] | None = None

    @model_validator(mode="after")
    def _one_budget(self) -> AutomlSettings:
        if self.max_gpu_hours is not None and "recommendations" in self.model_fields_set:
            raise ValueError("set recommendations or max_gpu_hours, not both (they are alternative budgets)")
        if self.pruner != "none" and self.pruner_warmup_epochs >= self.num_epochs:
            raise ValueError(
                f"pruner_warmup_epochs ({self.pruner_warmup_epochs}) must be below num_epochs ({self.num_epochs}), "
                "or the pruner could never stop a trial; lower it or set pruner: none"
            )
        return self

    @field_validator("spec_overrides")
    @classmethod
    def _overrides(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _no_run_owned_keys(value)


class DeftSettings(_Strict):
    """Phase 2, the DEFT data-improvement loop."""

    # One iteration by default: a run that only names its workspace should try the loop once (0 turns it off).
    max_iterations: Annotated[int, Field(ge=0, le=50, strict=True)] = 1
    num_epochs: Annotated[int, Field(ge=1, le=MAX_EPOCHS, strict=True)] = 2
    top_k_per_target: Annotated[int, Field(ge=1, le=10000, strict=True)] = 5
    # A fixed cosine floor for mined rows. The difference-region descriptor spreads similarities (DeepPCB: the
    # pool's median 0.35 to a target, its 50 nearest 0.61), so 0 keeps every neighbour that is not opposite
    # and leaves the selecting to top-k, the calibrated cut below and the rules.
    min_similarity: Annotated[float, Field(ge=-1.0, le=1.0)] = 0.0
    num_sdg: Annotated[int, Field(ge=0, le=100000, strict=True)] = 20
    # Share of the KPI set's boards (by board-name hash) that confirm instead of steer; unused when the
    # workspace names its confirm part in kpi/confirm_set.csv.
    confirm_share: Annotated[float, Field(gt=0.0, lt=1.0)] = 0.5
    # `confirm_split`: steer on part of the KPI set, judge on the rest (kpi/confirm_set.csv, else a board hash).
    # `whole_set` steers and judges on the same rows; the report labels every figure as steered on.
    kpi_split: Literal["confirm_split", "whole_set"] = "confirm_split"
    # The most of the mining pool the run may take; the loop stops before an iteration that would pass it.
    max_pool_share: Annotated[float, Field(gt=0.0, le=1.0)] = 0.25
    # The calibrated mining cut: keep a candidate only when its similarity lies this many standard deviations
    # above its target's mean similarity to the whole pool (null: only min_similarity and top-k cut). Opt-in
    # until its effect on quality is measured: with the difference-region descriptor z >= 2 removes 7 % of the
    # 50 nearest pool rows of DeepPCB targets (with the tile-mean descriptor before it, 94 %).
    mining_min_z: Annotated[float, Field(ge=0.0, le=100.0)] | None = None
    # Which candidates mining keeps (core/mining_rules.py). `uncertainty`: round robin over the targets, each
    # taking next the neighbour (of its top-k) the current model gets most wrong at the RCA's threshold;
    # `per_target`: the same round robin, nearest first; `similarity`: the highest similarities over all targets.
    mining_rank: Literal["similarity", "per_target", "uncertainty"] = "uncertainty"
    # `pool`: the kept neighbours hold PASS and defect rows in the pool's shares; `none`: whatever they carry.
    mining_label_balance: Literal["none", "pool"] = "pool"
    # At most this many mined rows of one pool board (its boardname, else its test directory); null: no cap.
    mining_max_per_board: Annotated[int, Field(ge=1, le=1_000_000, strict=True)] | None = None
    # This share of the mined rows is random pool rows (stratified PASS/defect) instead of neighbours: coverage.
    mining_explore_share: Annotated[float, Field(ge=0.0, lt=1.0)] = 0.25
    # `random`: each iteration also trains a control on the previous set plus as many random pool rows as the
    # loop added (same recipe, same warm start), scored on the confirm part. Opt-in: it doubles the training.
    control: Literal["none", "random"] = "none"
    # Retrainings that confirm the final candidate (mean and spread on the confirm part). 1 = no retraining:
    # the product's default keeps a run (and the demo) at one training per candidate.
    confirm_seeds: Annotated[int, Field(ge=1, le=20, strict=True)] = 1


class Estimates(_Strict):
    """Per-job minutes for the compute estimate; unknown values are shown as unknown, never invented."""

    minutes_per_recommendation: float | None = None
    minutes_per_iteration: float | None = None


class KubernetesSettings(_Strict):
    """What TAO jobs on the Kubernetes work pool get; an unset value keeps the work pool's own default.

    The defaults of `deployments/kubernetes/base-job-template.json` apply to every unset key: namespace
    `default`, the workspace on the PersistentVolumeClaim `aoi-workspace`, a 16Gi memory-backed /dev/shm,
    and a toleration of the usual `nvidia.com/gpu` taint. Node selector and tolerations apply to GPU jobs.
    """

    namespace: str | None = None
    workspace_pvc: str | None = None
    # Any other volume source for the workspace (e.g. {nfs: {server: ..., path: ...}}) instead of a PVC.
    workspace_volume: dict[str, Any] | None = None
    service_account: str | None = None
    image_pull_secret: str | None = None
    # The name of a Prefect String block that holds the image pull Secret's name (resolved by the worker).
    image_pull_secret_block: str | None = None
    # Kubernetes Secrets whose keys become the job's environment (the `credentials` names live there).
    env_secrets: tuple[str, ...] = ()
    node_selector: dict[str, str] | None = None
    tolerations: tuple[dict[str, Any], ...] | None = None
    shm_size: str | None = None

    @model_validator(mode="after")
    def _one_source_each(self) -> KubernetesSettings:
        if self.workspace_pvc is not None and self.workspace_volume is not None:
            raise ValueError("set workspace_pvc or workspace_volume, not both")
        if self.image_pull_secret is not None and self.image_pull_secret_block is not None:
            raise ValueError("set image_pull_secret or image_pull_secret_block, not both")
        return self


_SLURM_WORD = r"^\S+$"
# Slurm's time formats (minutes, MM:SS, HH:MM:SS, D-HH, D-HH:MM, D-HH:MM:SS) and memory sizes (16000M, 64G).
_SLURM_TIME = r"^(?:\d+-)?\d+(?::\d+){0,2}$"
_SLURM_MEMORY = r"^\d+[KMGT]?$"


class SlurmSettings(_Strict):
    """What TAO jobs on the Slurm work pool get; an unset value keeps the pool's own default.

    The defaults of the pool's base job template (`deployments/slurm/base-job-template.json`, as
    `aoi-pipeline pools setup --platform slurm` creates it) apply to every unset key: the cluster's default
    partition, a 4-hour time limit, runner `none` with the worker's Python environment. GPUs per job come from
    `gpus`/`gpus_per_job` (`--gres=gpu:N`); with runner `pyxis` or `apptainer` each job runs in its image from
    `images`, with the workspace and results folders mounted at the same paths.
    """

    partition: Annotated[str, Field(pattern=_SLURM_WORD)] | None = None
    account: Annotated[str, Field(pattern=_SLURM_WORD)] | None = None
    qos: Annotated[str, Field(pattern=_SLURM_WORD)] | None = None
    time_limit: Annotated[str, Field(pattern=_SLURM_TIME)] | None = None
    gpu_type: Annotated[str, Field(pattern=_SLURM_WORD)] | None = None
    cpus_per_task: Annotated[int, Field(ge=1, strict=True)] | None = None
    memory: Annotated[str, Field(pattern=_SLURM_MEMORY)] | None = None
    runner: Literal["none", "pyxis", "apptainer"] | None = None
    # Runner none: a virtual environment or conda prefix on the nodes with aoi-pipeline installed.
    python_env: Annotated[str, Field(pattern=_SLURM_WORD)] | None = None
    setup_commands: tuple[str, ...] | None = None
    extra_options: tuple[str, ...] | None = None
    log_dir: Annotated[str, Field(pattern=_SLURM_WORD)] | None = None
    requeue: StrictBool | None = None
    # Names of variables the worker copies from its own environment into every job (never values).
    env_names: tuple[Annotated[str, Field(pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")], ...] = ()


class PublishSettings(_Strict):
    """Where a finished run's deliverable is published: `<prefix>/<run name>/` in the bucket of a Prefect
    `S3Bucket` block (prefect-aws; its `AwsCredentials` hold the keys, so none appear in this file)."""

    bucket_block: Annotated[str, Field(min_length=1)]
    prefix: str = ""

    @field_validator("bucket_block")
    @classmethod
    def _block_name(cls, value: str) -> str:
        if not re.fullmatch(r"[a-z0-9][a-z0-9-]*", value):
            raise ValueError("a Prefect block name has only lowercase letters, digits and dashes (e.g. aoi-models)")
        return value

    @field_validator("prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return normalise_prefix(value)


class PipelineConfig(_Strict):
    """Everything one pipeline run needs besides the approval."""

    workspace: Path
    results_root: Path | None = None
    platform: str = "local"
    runtime: Literal["reference", "tao"] = "reference"
    kpi_target: str = "FAR < 5% at Recall=100%"
    spec_file: Path | None = None
    spec_overrides: tuple[str, ...] = ()
    dataset: DatasetSettings = DatasetSettings()
    images: Images = Images()
    gpus: int | Literal["auto"] = "auto"
    # A fraction 1/k (0.5, 0.25, ...) packs k jobs onto one GPU; local platform only.
    gpus_per_job: int | float = 1
    job_timeout_minutes: Annotated[float, Field(gt=0)] | None = None
    credentials: tuple[str, ...] = ()
    kubernetes: KubernetesSettings = KubernetesSettings()
    slurm: SlurmSettings | None = None
    phase1: AutomlSettings = AutomlSettings()
    deft: DeftSettings = DeftSettings()
    phase3: AutomlSettings = AutomlSettings()
    estimates: Estimates = Estimates()
    publish: PublishSettings | None = None

    @field_validator("spec_overrides")
    @classmethod
    def _overrides(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        return _no_run_owned_keys(value)

    @field_validator("platform")
    @classmethod
    def _built_platform(cls, value: str) -> str:
        if value in PLATFORMS:
            return value
        state = "is not built yet" if value in PLANNED_PLATFORMS else "is unknown"
        raise ValueError(f"platform {value!r} {state}; the platforms that exist are: {', '.join(PLATFORMS)}")

    @field_validator("gpus", mode="before")
    @classmethod
    def _gpu_count(cls, value: Any) -> Any:
        if value == "auto" or (isinstance(value, int) and not isinstance(value, bool) and value >= 0):
            return value
        raise ValueError("must be 'auto' or a GPU count >= 0")

    @field_validator("gpus_per_job", mode="before")
    @classmethod
    def _gpu_share(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value <= 64:
            raise ValueError("must be a GPU count from 0 to 64, or a fraction 1/k of one GPU (0.5, 0.25, ...)")
        if float(value).is_integer():
            return int(value)
        if value < 1 and is_gpu_share(value):
            return float(value)
        raise ValueError("a fractional GPU share must divide one GPU: 1/k such as 0.5, 0.25 or 0.125")

    @model_validator(mode="after")
    def _whole_gpus_on_pools(self) -> PipelineConfig:
        if isinstance(self.gpus_per_job, float) and self.platform != "local":
            raise ValueError(
                f"gpus_per_job {self.gpus_per_job:g}: the {self.platform} work pool takes whole GPUs per job; "
                "a fractional share packs trials onto a GPU on the local platform only (use 1 here)"
            )
        return self

    @property
    def resolved_results_root(self) -> Path:
        return self.results_root or self.workspace / "results"

    def require_platform(self, platform: str | None, *, other_deployment: str | None = None) -> None:
        """A deployment that runs its jobs on `platform` (None: any) refuses a config for another platform."""
        if platform is not None and platform != self.platform:
            elsewhere = f", or run the {other_deployment} deployment" if other_deployment else ""
            raise ConfigError.at(
                "pipeline config key platform",
                f"is {self.platform!r}, but this deployment runs jobs on {platform!r}",
                f"set platform: {platform} in the config{elsewhere}",
            )


def _location(loc: tuple[Any, ...]) -> str:
    parts: list[str] = []
    for item in loc:
        if isinstance(item, int):
            parts[-1:] = [f"{parts[-1]}[{item}]"] if parts else [f"[{item}]"]
        else:
            parts.append(str(item))
    return ".".join(parts) or "(top level)"


_SHORT = reprlib.Repr()
_SHORT.maxstring, _SHORT.maxother, _SHORT.maxlist, _SHORT.maxtuple, _SHORT.maxdict, _SHORT.maxlevel = 80, 80, 6, 6, 6, 3


def _short_repr(value: Any) -> str:
    """The offending value, shortened: a YAML alias bomb must not become a message of megabytes."""
    return _SHORT.repr(value)


def _fix_for(error: dict[str, Any]) -> str:
    if error["type"] == "extra_forbidden":
        return "remove the key or correct its spelling (see the documented keys in README.md)"
    if error["type"] == "missing":
        return "add the key"
    if error["loc"] and error["loc"][-1] == "spec_overrides":
        return "remove that override; set results_root to move the run directories (inside the workspace)"
    return "correct the value"


def config_from_mapping(data: Any, *, source: str = "pipeline config", base_dir: Path | None = None) -> PipelineConfig:
    """Validate a mapping (parsed YAML or notebook dict); relative paths resolve against `base_dir`."""
    if not isinstance(data, dict):
        got = type(data).__name__
        raise ConfigError.at(source, f"expected a mapping of keys, got {got}", "write key: value pairs")
    try:
        config = PipelineConfig.model_validate(data)
    except ValidationError as error:
        problems = [
            Problem(
                f"{source} key {_location(item['loc'])}",
                f"{item['msg']} (got {_short_repr(item.get('input'))})",
                _fix_for(dict(item)),
            )
            for item in error.errors()
        ]
        raise ConfigError(problems, summary=f"{source} is invalid") from None
    return _resolve_paths(config, base_dir) if base_dir else config


def _resolve_paths(config: PipelineConfig, base_dir: Path) -> PipelineConfig:
    def absolute(path: Path | None) -> Path | None:
        return None if path is None else (path if path.is_absolute() else (base_dir / path)).resolve()

    return config.model_copy(
        update={
            "workspace": absolute(config.workspace),
            "results_root": absolute(config.results_root),
            "spec_file": absolute(config.spec_file),
        }
    )


def load_config(path: Path) -> PipelineConfig:
    """Read and validate `pipeline.yaml`; relative paths in it are relative to the file."""
    if not path.is_file():
        raise ConfigError.at(str(path), "the pipeline config file does not exist", "pass an existing file")
    try:
        data = load_yaml_text(path.read_text(encoding="utf-8-sig"))
    except UnicodeDecodeError as error:
        raise ConfigError.at(str(path), f"is not UTF-8 text (byte {error.start})", "save the file as UTF-8") from None
    except yaml.YAMLError as error:
        raise ConfigError.at(str(path), f"is not valid YAML ({error})", "fix the YAML syntax") from None
    return config_from_mapping(data, source=str(path), base_dir=path.resolve().parent)
