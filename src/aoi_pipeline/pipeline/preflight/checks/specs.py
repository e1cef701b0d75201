"""Checks of sections 5 to 7: the KPI target, the base spec and the specs every phase will build.

The specs are built as the run will build them (the base spec from the workspace and the overrides, the trial
specs at both corners of each search space) and validated; a problem is named by the config key behind it
wherever there is one.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from aoi_pipeline.config import AutomlSettings, PipelineConfig
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_target import parse_target
from aoi_pipeline.core.search_space import SearchParam, build_search_space
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.spec.keys import get_key, set_key
from aoi_pipeline.core.spec.overrides import parse_override
from aoi_pipeline.core.spec.validation import validate_spec
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.errors import AoiPipelineError, Problem
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.preflight.checks.findings import Findings
from aoi_pipeline.pipeline.run_specs import inference_spec, spec_source, training_spec, workspace_base_spec

_PINNED_KEYS = {"train.num_epochs": "num_epochs", "dataset.classify.batch_size": "batch_size"}


@dataclass(frozen=True)
class PhaseSpace:
    """The keys one AutoML phase sweeps, and the architecture keys a warm start leaves out."""

    swept: tuple[SearchParam, ...]
    dropped_architecture: tuple[str, ...]


def get_key_or(spec: Spec, dotted: str, default: Any) -> Any:
    """The value at `dotted`, or `default` when the spec does not set it."""
    try:
        return get_key(spec, dotted)
    except AoiPipelineError:
        return default


def corner(param: SearchParam, *, high: bool) -> Any:
    """The value a trial may take at one end of the parameter's range (first/last choice for a list)."""
    if param.kind == "categorical":
        choices = param.choices or (None,)
        return choices[-1] if high else choices[0]
    value = param.high if high else param.low
    return int(value) if param.kind == "int" and value is not None else value


def baseline_batch(config: PipelineConfig, base: Spec | None) -> int:
    """Without Phase 1 the baseline trains with the base spec's batch size (else the Phase 1 one)."""
    batch = None if base is None else get_key_or(base, "dataset.classify.batch_size", None)
    return batch if isinstance(batch, int) else config.phase1.batch_size


def batch_sizes(config: PipelineConfig, base: Spec | None) -> dict[str, int]:
    """The batch size of every training the plan runs, by the config key that sets it."""
    sizes = {
        f"{phase}.batch_size": settings.batch_size
        for phase, settings in (("phase1", config.phase1), ("phase3", config.phase3))
        if settings.enabled
    }
    if not config.phase1.enabled:
        sizes["base spec dataset.classify.batch_size (baseline training)"] = baseline_batch(config, base)
    return sizes


def check_kpi_target(config: PipelineConfig) -> tuple[MetricContract | None, list[Problem]]:
    try:
        return parse_target(config.kpi_target), []
    except AoiPipelineError as error:
        return None, [Problem(f"pipeline config key kpi_target ({p.where})", p.what, p.fix) for p in error.problems]


def build_base_spec(config: PipelineConfig, workspace: Workspace) -> tuple[Spec | None, list[Problem]]:
    """The run's base spec, or None with the problems of its source or of the config's layer on top."""
    source = spec_source(config, workspace)
    if source is not None:
        try:
            load_spec(source)
        except AoiPipelineError as error:
            named = config.spec_file is not None
            return None, [
                Problem(f"pipeline config key spec_file ({p.where})" if named else p.where, p.what, p.fix)
                for p in error.problems
            ]
    try:
        return workspace_base_spec(config, workspace), []
    except AoiPipelineError as error:
        # The source loaded, so what failed is the config's layer on top of it.
        return None, [Problem(f"pipeline config key spec_overrides ({p.where})", p.what, p.fix) for p in error.problems]


def check_search_spaces(config: PipelineConfig, base: Spec | None) -> tuple[dict[str, PhaseSpace], Findings]:
    """The swept keys of Phase 1 and (warm-started) Phase 3, each checked against the base spec."""
    spaces: dict[str, PhaseSpace] = {}
    found = Findings()
    for phase, settings, warm in (("phase1", config.phase1, False), ("phase3", config.phase3, True)):
        if settings.enabled:
            space, phase_found = _phase_space(config, phase, settings, warm, base)
            found += phase_found
            if space is not None:
                spaces[phase] = space
    return spaces, found


def _phase_space(
    config: PipelineConfig, phase: str, settings: AutomlSettings, warm_start: bool, base: Spec | None
) -> tuple[PhaseSpace | None, Findings]:
    overrides = {key: None if value is None else value.model_dump() for key, value in settings.search_space.items()}
    try:
        full = build_search_space(overrides)
    except AoiPipelineError as error:
        return None, Findings.of(
            Problem(f"pipeline config key {phase}.{p.where}", p.what, p.fix) for p in error.problems
        )
    swept = build_search_space(overrides, warm_start=warm_start)
    known, blockers, warnings = [], [], []
    overridden = overridden_keys(config, settings)
    for param in swept:
        where = _search_key_where(phase, settings, param.key)
        try:
            if base is not None:
                set_key(base, param.key, corner(param, high=False))
            known.append(param)
        except AoiPipelineError as error:
            blockers += [Problem(where, p.what, p.fix) for p in error.problems]
        if param.key in overridden:
            warnings.append(
                f"{where} sweeps {param.key}, which spec_overrides also sets: each trial's sampled value "
                f"replaces the override (pin it with {phase}.search_space: {{{param.key}: null}} instead)"
            )
    dropped = tuple(param.key for param in full if param not in swept)
    # Unknown keys are blockers already; the trial specs are still checked with the known ones.
    return PhaseSpace(tuple(known), dropped), Findings.of(blockers, warnings)


def _search_key_where(phase: str, settings: AutomlSettings, key: str) -> str:
    if key in settings.search_space:
        return f'pipeline config key {phase}.search_space["{key}"]'
    return f"default search space of {phase}: {key}"


def overridden_keys(config: PipelineConfig, settings: AutomlSettings) -> set[str]:
    """The spec keys the run's and the phase's spec_overrides set (a malformed one is reported elsewhere)."""
    keys = set()
    for text in (*config.spec_overrides, *settings.spec_overrides):
        try:
            keys.add(parse_override(text)[0])
        except AoiPipelineError:
            continue  # reported where the override is applied
    return keys


def check_job_specs(
    config: PipelineConfig,
    workspace: Workspace,
    layout: RunLayout,
    base: Spec | None,
    spaces: Mapping[str, PhaseSpace],
) -> list[Problem]:
    """Build and validate, at both corners of the search space, the specs the first jobs will run."""
    if base is None:
        return []
    checked = _TrialSpecs(config, workspace, layout, base)
    blockers: list[Problem] = []
    if config.phase1.enabled:
        if "phase1" in spaces:
            blockers += checked.problems("phase1", config.phase1, spaces["phase1"].swept, None)
    else:
        settings = config.phase1.model_copy(
            update={
                "num_epochs": config.deft.num_epochs,
                "batch_size": baseline_batch(config, base),
                "spec_overrides": (),
            }
        )
        blockers += checked.problems("baseline", settings, (), None)
    if config.phase3.enabled and "phase3" in spaces:
        warm = layout.train_dir("baseline") / "phase2_best.pth"
        blockers += checked.problems("phase3", config.phase3, spaces["phase3"].swept, warm)
    return blockers


@dataclass(frozen=True)
class _TrialSpecs:
    """Builds one phase's first training and validation-inference specs as the run will, and validates them."""

    config: PipelineConfig
    workspace: Workspace
    layout: RunLayout
    base: Spec

    def problems(
        self, phase: str, settings: AutomlSettings, space: Sequence[SearchParam], warm_start: Path | None
    ) -> list[Problem]:
        found: dict[str, Problem] = {}
        # Both ends of every range: a range reaching outside what the spec allows fails at one of them.
        for high in (False, True):
            params = {param.key: corner(param, high=high) for param in space}
            try:
                self._build_and_validate(phase, settings, params, warm_start)
            except AoiPipelineError as error:
                for problem in error.problems:
                    named = self._named(phase, settings, problem)
                    found.setdefault(f"{named.where}|{named.what}", named)
        return list(found.values())

    def _build_and_validate(
        self, phase: str, settings: AutomlSettings, params: dict[str, Any], warm_start: Path | None
    ) -> None:
        trial_dir = self.layout.trial_dir(phase, 0) if phase != "baseline" else self.layout.iteration_dir(phase)
        train = training_spec(
            self.base,
            results_dir=trial_dir / "train",
            num_epochs=settings.num_epochs,
            batch_size=settings.batch_size,
            params=params,
            pretrained_model=warm_start,
            extra_overrides=settings.spec_overrides,
        )
        validate_spec(train, action="train", where=f"{phase} training spec")
        infer = inference_spec(
            train,
            checkpoint=trial_dir / "train" / "model.pth",
            csv_path=self.workspace.validation_csv,
            images_dir=self.workspace.images_dir,
            results_dir=trial_dir / "val_inference",
        )
        validate_spec(infer, action="inference", where=f"{phase} validation inference spec")

    def _named(self, phase: str, settings: AutomlSettings, problem: Problem) -> Problem:
        """Name the config key behind a spec problem where there is one."""
        prefixed = problem.where.startswith(f"{phase} ") and ": " in problem.where
        key = problem.where.split(": ", 1)[1] if prefixed else problem.where
        if key in settings.search_space:
            return Problem(f'pipeline config key {phase}.search_space["{key}"]', problem.what, problem.fix)
        if key in _PINNED_KEYS and phase != "baseline":
            return Problem(f"pipeline config key {phase}.{_PINNED_KEYS[key]}", problem.what, problem.fix)
        if key in overridden_keys(self.config, settings):
            return Problem(f"pipeline config key {phase}.spec_overrides ({key})", problem.what, problem.fix)
        return problem if prefixed else Problem(f"{phase} training spec: {key}", problem.what, problem.fix)
