"""The nine sections of the consolidated pre-flight, and the plan an approval approves with its hash.

Everything here renders facts the checks and the probe gathered (`PlanFacts`); nothing is asked or checked.
The plan leaves the run name out, so a re-run of the same plan keeps its hash, and its content is part of the
contract with every approved run directory: a run approved before must still resume, so a change to what
goes into `build_plan` changes every approval's hash.
"""

from __future__ import annotations

import hashlib
import json
import math
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from aoi_pipeline.approval import plan_hash as hash_of_plan
from aoi_pipeline.config import AutomlSettings, DeftSettings, PipelineConfig
from aoi_pipeline.core.files import sha256_file
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_target import render_target
from aoi_pipeline.core.search_space import SearchParam
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.workspace import KPI, TRAINING, VALIDATION, Workspace
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.preflight.checks.credentials import credential_needs, credential_status
from aoi_pipeline.pipeline.preflight.checks.data import DataFacts
from aoi_pipeline.pipeline.preflight.checks.gpus import GpuPlan
from aoi_pipeline.pipeline.preflight.checks.host import RUNTIME_COMMANDS, network_mode
from aoi_pipeline.pipeline.preflight.checks.images import missing_images, used_images
from aoi_pipeline.pipeline.preflight.checks.specs import PhaseSpace
from aoi_pipeline.pipeline.preflight.measured import NOTHING_MEASURED, Measured, MeasuredMinutes
from aoi_pipeline.pipeline.preflight.probe import ProbeAnswers
from aoi_pipeline.pipeline.preflight.report import table
from aoi_pipeline.pipeline.run_specs import spec_source

SECTION_TITLES: tuple[str, ...] = (
    "Workspace, host, platform, network",
    "Credentials",
    "Container images",
    "Datasets",
    "Phase 1: AutoML baseline",
    "Phase 2: DEFT loop",
    "Phase 3: AutoML refinement",
    "Compute estimate",
    "Confirmation",
)
NETWORK_ARCH = "visual_changenet (classify)"
HARD_STOPS = (
    "leakage between sets",
    "an empty or missing mining pool",
    "a missing CSV or image",
    "a failed stage",
)


@dataclass(frozen=True)
class PlanFacts:
    """Everything the sections and the plan show, gathered by the checks and the probe."""

    config: PipelineConfig
    environ: Mapping[str, str]
    workspace: Workspace
    layout: RunLayout
    resuming: bool  # the run directory exists already
    answers: ProbeAnswers
    base: Spec | None
    data: DataFacts
    contract: MetricContract | None
    spaces: Mapping[str, PhaseSpace]
    gpus: GpuPlan
    measured: MeasuredMinutes = NOTHING_MEASURED  # durations earlier runs in the results root recorded

    @property
    def mining(self) -> bool:
        return self.config.deft.max_iterations > 0

    @property
    def air_gapped(self) -> bool:
        return self.environ.get("AIR_GAPPED") == "1"


def sections(facts: PlanFacts, blocker_count: int) -> list[tuple[str, list[str]]]:
    """The nine sections in order: (title, markdown lines); the last one asks for approval if nothing blocks."""
    lines = (
        host_lines(facts) + gpu_lines(facts),
        credential_lines(facts),
        image_lines(facts),
        dataset_lines(facts.data),
        phase1_lines(facts),
        phase2_lines(facts),
        phase3_lines(facts),
        estimate_lines(facts),
        confirmation_lines(blocker_count),
    )
    return list(zip(SECTION_TITLES, lines, strict=True))


# ------------------------------------------------------------------------- 1-3: host, credentials, images


def host_lines(facts: PlanFacts) -> list[str]:
    config, answers = facts.config, facts.answers
    lines = [
        f"- Workspace: `{facts.workspace.root}`",
        f"- Results directory: `{facts.layout.root}` (computed; created only after approval)",
        f"- Host: {answers.host_name}",
        f"- Network architecture: {NETWORK_ARCH}",
        f"- Network mode: {network_mode(facts.air_gapped)}",
        f"- Python: `{sys.executable}`",
    ]
    command = RUNTIME_COMMANDS[config.runtime]
    if answers.reachable is None:  # platform local: nothing to reach
        lines.append("- Platform: local (jobs run as processes on this machine)")
        lines.append(f"- Runtime: {config.runtime} (`{command}` {'found' if answers.runtime_found else 'MISSING'})")
    else:
        reachable, seen = answers.reachable
        shown = {True: "reachable", False: "UNREACHABLE", None: "UNKNOWN"}[reachable]
        lines.append(f"- Platform: {config.platform}: {shown} ({seen})")
        lines.append(f"- Runtime: {config.runtime} (`{command}` inside the images)")
    timeout = config.job_timeout_minutes
    lines.append(f"- Job timeout: {f'{timeout:g} min per job' if timeout else 'none'}")
    return [*lines, _publish_line(facts)]


def _publish_line(facts: PlanFacts) -> str:
    publish, bucket = facts.config.publish, facts.answers.bucket
    if publish is None or bucket is None:
        return "- Publishing: none (the deliverable stays in the run directory)"
    folder = "/".join(part for part in (publish.prefix, facts.layout.root.name) if part)
    return f"- Publishing: `{folder}/` in {bucket[1] if bucket[0] else f'an UNREACHABLE bucket ({bucket[1]})'}"


def gpu_lines(facts: PlanFacts) -> list[str]:
    gpus = facts.gpus
    if gpus.detected is None:
        requested = "decided by the platform" if gpus.count == "auto" else f"{gpus.count}"
        return [f"- GPUs: on the {facts.config.platform} nodes (not probed from here); requested: {requested}"]
    listed = [f"  - {index}: {gpu.describe()}" for index, gpu in enumerate(gpus.detected)]
    detected = f"{len(gpus.detected)} detected" if gpus.detected else "none detected"
    used = "CPU only" if not gpus.count else f"{gpus.count} for the run, {gpus.per_job} per job"
    return [f"- GPUs: {detected}; {used}", *listed]


def credential_lines(facts: PlanFacts) -> list[str]:
    needs = credential_needs(facts.config, facts.environ)
    if not needs:
        return [f"- None needed for platform {facts.config.platform}."]
    rows = [(name, need, credential_status(facts.environ, name)) for name, need in needs.items()]
    return [
        "Presence only (SET/UNSET): values are never read or shown.",
        "",
        *table(("variable", "needed", "status"), rows),
    ]


def image_lines(facts: PlanFacts) -> list[str]:
    platform, runtime = facts.config.platform, facts.config.runtime
    used = used_images(facts.config)
    if platform == "local":
        how = "the reference runtime" if runtime == "reference" else "visual_changenet"
        rows = [(role, uri, "not used: runs without containers") for role, uri in used.items()]
        return [
            f"Platform local runs jobs with {how} on this machine; the images are recorded only.",
            "",
            *table(("job", "image", "status"), rows),
        ]
    if platform == "slurm" and (facts.config.slurm is None or facts.config.slurm.runner in (None, "none")):
        return ["Platform slurm runs jobs in the nodes' Python environment (runner none): no image is used."]
    if platform != "docker":
        rows = [(role, uri, f"pulled by the {platform} nodes (not checked from here)") for role, uri in used.items()]
        return table(("job", "image", "status"), rows)
    statuses = facts.answers.images
    shown = {True: "PRESENT", False: "MISSING", None: "UNKNOWN (docker did not answer)"}
    lines = table(("job", "image", "status"), [(role, uri, shown[statuses[uri]]) for role, uri in used.items()])
    missing = missing_images(statuses)
    if missing:
        lines += ["", f"{len(missing)} MISSING image(s) will be pulled after approval (not a blocker)."]
    return lines


# ------------------------------------------------------------------------------------------ 4: datasets


def dataset_lines(data: DataFacts) -> list[str]:
    root = data.workspace.root
    rows = []
    for row in data.sets:
        labels = ", ".join(f"{label} {count}" for label, count in row.labels.items())
        shown_labels = f"{labels} ({row.status})" if row.status and labels else labels or row.status
        rows.append((row.name, _relative(row.path, root), "-" if row.rows is None else str(row.rows), shown_labels))
    lines = [
        f"- Images: `{data.workspace.images_dir}`",
        "",
        *table(("set", "file", "rows", "labels"), rows, right=(2,)),
    ]
    kpi = next((row for row in data.sets if row.name == KPI and row.rows), None)
    if kpi is not None and kpi.rows:
        shares = ", ".join(f"{label} {count} ({100 * count / kpi.rows:.1f}%)" for label, count in kpi.labels.items())
        lines += ["", f"- KPI label distribution: {shares}"]
    lines += ["", "Leakage between sets (must read 0 overlapping rows):", ""]
    leak_rows = [(f"{a} / {b}", str(count)) for (a, b), count in data.leakage.items()]
    lines += table(("sets", "overlapping rows"), leak_rows, right=(1,)) if leak_rows else ["- not counted"]
    lines += ["", "- Pre-generated SDG images: none (SDG runs inside each DEFT iteration)"]
    if data.notes:
        lines += ["", *(f"- Note: {note}" for note in data.notes)]
    return lines


# ------------------------------------------------------------------------------------------ 5-7: phases


def _metric_text(contract: MetricContract | None) -> str:
    recall = contract.recall_target_pct if contract is not None else None
    at = f"Recall={recall:g}%" if recall is not None else "the contract's recall"
    return (
        f"FAR at {at} on the validation set, minimised (ties: lower val_loss; a trial scoring every "
        "validation row alike is rejected); the KPI set is never used by AutoML"
    )


def _space_table(space: PhaseSpace | None) -> list[str]:
    if space is None:
        return ["- Swept keys: not shown (the search space has blockers)"]
    rows = [(f"`{p.key}`", p.kind, _range_text(p)) for p in space.swept]
    return ["Swept keys:", "", *table(("spec key", "type", "range"), rows)]


def _budget_line(settings: AutomlSettings) -> str:
    if settings.max_gpu_hours is None:
        return f"- Recommendations: {settings.recommendations} (each one training job + one validation inference)"
    return (
        f"- Budget: {settings.max_gpu_hours:g} GPU-hours of trials (trial time × GPUs per trial; new trials start "
        "until it is used, those started finish); the count it implies is in the compute estimate"
    )


def _pruner_line(settings: AutomlSettings) -> str:
    if settings.pruner == "none":
        return "- Pruning: none (every trial trains all its epochs)"
    rule = "median rule" if settings.pruner == "median" else "successive halving"
    return (
        f"- Pruning: {rule} on each epoch's validation FAR (status.json), from epoch "
        f"{settings.pruner_warmup_epochs} on; a pruned trial's job is stopped and recorded as pruned"
    )


def _automl_common(facts: PlanFacts, phase: str, settings: AutomlSettings) -> list[str]:
    overrides = ", ".join(f"`{o}`" for o in settings.spec_overrides) or "none"
    return [
        f"- Algorithm: Optuna TPE (multivariate, constant liar for parallel trials), seed {settings.seed}",
        _budget_line(settings),
        _pruner_line(settings),
        f"- Parallel trial slots: {settings.parallel} configured, {facts.gpus.slots(settings.parallel)} usable",
        f"- Metric: {_metric_text(facts.contract)}",
        f"- Validation set: `{facts.workspace.validation_csv}`",
        f"- Pinned: train.num_epochs = {settings.num_epochs}, dataset.classify.batch_size = "
        f"{settings.batch_size}; spec overrides: {overrides}",
        f"- Results: `{facts.layout.phase_dir(phase)}` (the Optuna study is stored there; created after approval)",
    ]


def phase1_lines(facts: PlanFacts) -> list[str]:
    settings = facts.config.phase1
    source = spec_source(facts.config, facts.workspace)
    spec_line = f"- Spec source: `{source}`" if source else "- Spec source: the built-in DEFT baseline spec"
    if not settings.enabled:
        return ["- Disabled: Phase 2 trains its baseline from the base spec (no sweep)", spec_line]
    return [
        *_automl_common(facts, "phase1", settings),
        f"- Training set: `{facts.workspace.training_csv}`",
        spec_line,
        "",
        *_space_table(facts.spaces.get("phase1")),
    ]


def phase2_lines(facts: PlanFacts) -> list[str]:
    config, layout = facts.config, facts.layout
    deft = config.deft
    target = render_target(facts.contract) if facts.contract is not None else f"{config.kpi_target} (INVALID)"
    iterations = (
        f"{deft.max_iterations}"
        if deft.max_iterations
        else "0 (baseline inference and evaluation only, no improvement iterations)"
    )
    if config.phase1.enabled:
        baseline = f"`{layout.train_dir('baseline')}` pre-seeded with Phase 1's winning checkpoint (no retrain)"
    else:
        baseline = f"trained into `{layout.train_dir('baseline')}` from the base spec (Phase 1 is disabled)"
    resuming = (
        f"yes: `{layout.root}` exists; the run continues at its first unfinished stage"
        if facts.resuming
        else "no (fresh run directory)"
    )
    rows = [
        ("KPI target", target),
        ("Max DEFT iterations", iterations),
        (
            "Stop condition",
            "KPI contract met, max iterations reached, or the next iteration would pass the pool budget "
            "(not guaranteed: FAR may regress)",
        ),
        ("KPI split", _split_text(deft.kpi_split, deft.confirm_share)),
        ("Pool budget", f"at most {deft.max_pool_share:.0%} of the mining pool over the run"),
        ("Training epochs (per iteration)", str(deft.num_epochs)),
        ("Num SDG (per iteration)", f"{deft.num_sdg}, split over the RCA's types by their cost"),
        ("Mining top-K (per target)", str(deft.top_k_per_target)),
        ("Mining cutoff", _cut_text(deft.min_similarity, deft.mining_min_z)),
        ("Mining selection", _selection_text(deft)),
        ("Compute / GPUs", _compute_text(facts)),
        ("Resuming", resuming),
        ("Baseline", baseline),
        ("DEFT's own gate", "auto-approved by the consolidated gate"),
        ("Hard stops (end the run)", ", ".join(HARD_STOPS)),
    ]
    return table(("field", "value"), rows)


def _split_text(kpi_split: str, confirm_share: float) -> str:
    if kpi_split == "whole_set":
        return "none: the loop steers and is judged on the whole KPI set (figures are steered on)"
    return (
        "by board: kpi/confirm_set.csv when present, else "
        f"{confirm_share:.0%} of the boards by name hash confirm (gate, best iteration, report); the rest steer"
    )


def _cut_text(min_similarity: float, min_z: float | None) -> str:
    fixed = f"cosine similarity >= {min_similarity:g}"
    if min_z is None:
        return fixed
    return f"{fixed} and >= {min_z:g} standard deviations above the target's mean similarity to the pool"


def _selection_text(deft: DeftSettings) -> str:
    rank = {
        "uncertainty": "round robin over the targets, the neighbours the model gets most wrong first",
        "per_target": "round robin over the targets, nearest first",
        "similarity": "highest similarity over all targets",
    }[deft.mining_rank]
    parts = [rank, "PASS/defect in the pool's shares" if deft.mining_label_balance == "pool" else "any labels"]
    if deft.mining_max_per_board:
        parts.append(f"at most {deft.mining_max_per_board} per board")
    if deft.mining_explore_share:
        parts.append(f"{deft.mining_explore_share:.0%} random pool rows for coverage")
    return "; ".join(parts)


def _compute_text(facts: PlanFacts) -> str:
    gpus = facts.gpus
    if gpus.detected is None:
        count = "GPUs as the platform decides" if gpus.count == "auto" else f"{gpus.count} GPU(s)"
        return f"{count} on {facts.config.platform}"
    if not gpus.count:
        return "CPU only"
    models = sorted({gpu.describe() for gpu in gpus.detected[: int(gpus.count)]})
    return f"{gpus.count} GPU(s) · {', '.join(models)}"


def phase3_lines(facts: PlanFacts) -> list[str]:
    settings = facts.config.phase3
    if not settings.enabled:
        return ["- Disabled: Phase 2's best model is the deliverable"]
    train_csv = (
        "Phase 2's cumulative training CSV"
        if facts.mining
        else f"`{facts.workspace.training_csv}` (Phase 2 adds no rows while deft.max_iterations is 0)"
    )
    space = facts.spaces.get("phase3")
    dropped = ", ".join(f"`{key}`" for key in space.dropped_architecture) if space else ""
    return [
        *_automl_common(facts, "phase3", settings),
        f"- Training set: {train_csv}",
        "- Validation set policy: the same validation set as Phase 1",
        "- Warm start: every trial starts from Phase 2's best checkpoint; architecture keys are pinned"
        + (f" (not swept: {dropped})" if dropped else ""),
        "- Fallback: if Phase 3's winner does not beat Phase 2's best on the KPI contract, Phase 2's best stands",
        "",
        *_space_table(space),
    ]


# ------------------------------------------------------------------------------- 8-9: estimate, confirm


def estimate_lines(facts: PlanFacts) -> list[str]:
    config = facts.config
    m = config.deft.max_iterations + 1
    t_rec, rec_source = _per_unit(
        config.estimates.minutes_per_recommendation, facts.measured.per_recommendation, "minutes_per_recommendation"
    )
    t_iter, iter_source = _per_unit(
        config.estimates.minutes_per_iteration, facts.measured.per_iteration, "minutes_per_iteration"
    )
    n1, what1 = phase_count(config.phase1, t_rec, facts.gpus.per_job)
    n3, what3 = phase_count(config.phase3, t_rec, facts.gpus.per_job)
    terms = [_term(n1, t_rec), _term(m, t_iter), _term(n3, t_rec)]
    lines = [
        "- Formula: N1 × t_rec + M × t_iter + N3 × t_rec",
        f"- N1 = {_count_text(n1)} (Phase 1 {what1}), N3 = {_count_text(n3)} (Phase 3 {what3})",
        f"- M = {config.deft.max_iterations} + 1 = {m} (DEFT iterations plus the baseline stage: "
        "inference and evaluation of the starting model, counted as one iteration)",
        f"- t_rec = {rec_source}",
        f"- t_iter = {iter_source}",
    ]
    total = _sum_known(terms)
    shown = " + ".join(text for text, _ in terms)
    if total is None:
        return [
            *lines,
            f"- Estimate: {shown} = unknown",
            "- To get a number: set estimates.minutes_per_recommendation and "
            "estimates.minutes_per_iteration in the pipeline config, or time a 1-epoch run "
            "(phase1.recommendations: 1, phase1.num_epochs: 1) and scale it by the epochs",
        ]
    lines.append(f"- Estimate: {shown} = {_minutes(total)} of compute")
    slots = facts.gpus.slots
    wall = _sum_known(
        [
            _term(math.ceil(n1 / slots(config.phase1.parallel)) if n1 else n1, t_rec),
            _term(m, t_iter),
            _term(math.ceil(n3 / slots(config.phase3.parallel)) if n3 else n3, t_rec),
        ]
    )
    if wall is not None and wall != total:
        lines.append(f"- Wall clock with the usable parallel trial slots: about {_minutes(wall)}")
    return lines


def confirmation_lines(blocker_count: int) -> list[str]:
    if blocker_count:
        return [
            f"**Not ready for approval:** fix the {blocker_count} blocker(s) listed above, "
            "then run the pre-flight again."
        ]
    return [
        "**Approve all three phases?** After approval the run does not pause again until it completes; "
        f"only a hard stop ends it early ({', '.join(HARD_STOPS)}).",
        "",
        "The approval (or a pre-approval with `--yes`) holds for this plan hash only: any change to the "
        "config, the CSVs or the spec needs a new approval.",
    ]


# ------------------------------------------------------------------------------------------------ plan


_AUTOML_KEYS_HASHED_WHEN_SET = {"pruner": "none", "pruner_warmup_epochs": 1, "max_gpu_hours": None}


def build_plan(facts: PlanFacts) -> dict[str, Any]:
    """What an approval approves. The run name is left out so a re-run of the same plan keeps its hash."""
    config = facts.config
    # Publishing and the Slurm settings are approved with the plan when configured; a run without them keeps
    # its hash.
    exclude = {key for key in ("publish", "slurm") if getattr(config, key) is None}
    dumped = config.model_dump(mode="json", exclude=exclude)
    for phase in ("phase1", "phase3"):
        # Pruning and a GPU-hour budget left unset keep the hash of plans approved before they existed.
        for key, default in _AUTOML_KEYS_HASHED_WHEN_SET.items():
            if dumped[phase].get(key) == default:
                del dumped[phase][key]
    return {
        "config": dumped,
        "kpi_target": render_target(facts.contract) if facts.contract is not None else None,
        "base_spec_sha256": None if facts.base is None else _json_sha256(facts.base),
        # The mining pool is deliberately not hashed: it is append-only and grows daily, and a nightly
        # pre-approval must survive that. Its rows are checked (and mined) at run time instead.
        "dataset_sha256": {name: _file_sha256(facts.workspace.csv_path(name)) for name in (TRAINING, VALIDATION, KPI)},
        "search_spaces": {
            phase: [_param_dict(param) for param in space.swept] for phase, space in facts.spaces.items()
        },
        "images": used_images(config),
        "platform": config.platform,
        "runtime": config.runtime,
        "gpus": {"count": facts.gpus.count, "per_job": facts.gpus.per_job},
    }


def plan_hash(plan: dict[str, Any]) -> str:
    """The hash an approval holds for: the approval module's canonical hash of the plan."""
    return hash_of_plan(plan)


# ---------------------------------------------------------------------------------------------- helpers


def _range_text(param: SearchParam) -> str:
    if param.kind == "categorical":
        return "one of " + ", ".join(repr(choice) for choice in param.choices or ())
    scale = " (log scale)" if param.log else ""
    return f"{param.low:g} to {param.high:g}{scale}"


def _param_dict(param: SearchParam) -> dict[str, Any]:
    data = asdict(param)
    data["choices"] = None if param.choices is None else list(param.choices)
    return data


def phase_count(settings: AutomlSettings, t_rec: float | None, per_job: float) -> tuple[int | None, str]:
    """(recommendations, what they are) of an AutoML phase; with a GPU-hour budget, the count it implies at
    `t_rec` minutes per recommendation and `per_job` GPUs each (None while t_rec is unknown)."""
    if not settings.enabled:
        return 0, "recommendations; disabled"
    hours = settings.max_gpu_hours
    if hours is None:
        return settings.recommendations, "recommendations"
    share = per_job or 1  # a CPU trial counts its wall time once
    what = f"recommendations implied by max_gpu_hours {hours:g} at {share:g} GPU per trial"
    if t_rec is None:
        return None, what + "; unknown until estimates.minutes_per_recommendation is set"
    return max(1, math.floor(hours * 60 / (t_rec * share))), what


def _count_text(count: int | None) -> str:
    return "unknown" if count is None else str(count)


def _term(count: int | None, minutes: float | None) -> tuple[str, float | None]:
    if count == 0:
        return "0", 0.0
    if count is None or minutes is None:
        return f"{_count_text(count)} × {_minutes_or_unknown(minutes)}", None
    return f"{count} × {minutes:g} min", count * minutes


def _sum_known(terms: Sequence[tuple[str, float | None]]) -> float | None:
    values = [value for _, value in terms]
    return None if any(value is None for value in values) else sum(v for v in values if v is not None)


def _minutes(total: float) -> str:
    return f"{total:g} min" if total < 120 else f"{total:g} min (≈ {total / 60:.1f} h)"


def _minutes_or_unknown(minutes: float | None) -> str:
    return "unknown" if minutes is None else f"{minutes:g} min"


def _per_unit(configured: float | None, measured: Measured, key: str) -> tuple[float | None, str]:
    """(minutes, where they come from): the config's estimate, else an earlier run's measurement, else unknown."""
    if configured is not None:
        return configured, f"{configured:g} min (estimates.{key})"
    if measured.minutes is not None:
        minutes = float(f"{measured.minutes:.2g}")
        return minutes, measured.text(f"estimates.{key} overrides it")
    return None, f"unknown (estimates.{key}; no earlier run in the results root measured one)"


def _json_sha256(data: Any) -> str:
    canonical = json.dumps(data, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode("utf-8")).hexdigest()


def _file_sha256(path: Path) -> str | None:
    try:
        return sha256_file(path)
    except OSError:
        return None


def _relative(path: Path, root: Path) -> str:
    try:
        return str(path.relative_to(root))
    except ValueError:
        return str(path)
