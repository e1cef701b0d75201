"""The consolidated pre-flight: every read-only check of all three phases, shown as the nine-section plan.

Before the one approval of a run, `run_preflight` checks the workspace and its CSVs (through the core
validators: images, labels, leakage between every pair of sets, the mining pool), the KPI target, the specs
every phase will build, the runtime or container images, the credentials (by name only: a value is never
read beyond "is it set"), the platform and the GPU shape, and it estimates the compute. It collects every
problem instead of stopping at the first: problems that must be fixed before the run may be approved are
blockers, everything else a user should know is a warning. The result renders as the nine sections of the
reference's consolidated pre-flight (markdown for the Prefect artifact and the gate, plain text for the
terminal) and carries the plan an approval approves, with its hash. Nothing is written, pulled or launched:
the only contact with the outside is the `PlatformProbe`, which asks questions and changes nothing.
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import math
import os
import re
import shutil
import socket
import subprocess
import sys
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Protocol

from aoi_pipeline.approval import plan_hash as hash_of_plan
from aoi_pipeline.config import AutomlSettings, PipelineConfig
from aoi_pipeline.core.dataset import read_csv_table, read_dataset_csv
from aoi_pipeline.core.files import sha256_file
from aoi_pipeline.core.leakage import CsvInRoot, leaks_between, sample_keys
from aoi_pipeline.core.metric_contract import MetricContract
from aoi_pipeline.core.metric_target import parse_target, render_target
from aoi_pipeline.core.search_space import SearchParam, build_search_space
from aoi_pipeline.core.spec import Spec
from aoi_pipeline.core.spec.keys import get_key, set_key
from aoi_pipeline.core.spec.overrides import parse_override
from aoi_pipeline.core.spec.validation import validate_spec
from aoi_pipeline.core.spec.yaml_io import load_spec
from aoi_pipeline.core.workspace import (
    KPI,
    MINING_POOL,
    SET_NAMES,
    TRAINING,
    VALIDATION,
    Workspace,
    check_workspace,
)
from aoi_pipeline.errors import AoiPipelineError, DatasetError, Problem
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.run_specs import inference_spec, spec_source, training_spec, workspace_base_spec

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
RUNTIME_COMMANDS = {"reference": "aoi-changenet", "tao": "visual_changenet"}
REFERENCE_INSTALL_FIX = "install the reference extra: pip install 'aoi-pipeline[reference]'"
HARD_STOPS = (
    "leakage between sets",
    "an empty or missing mining pool",
    "a missing CSV or image",
    "a failed stage",
)


@dataclass(frozen=True)
class PlatformCredentials:
    """The environment variables a platform needs (automl-pipeline-spec §5.3), by name."""

    required: tuple[str, ...] = ()
    one_of: tuple[tuple[str, ...], ...] = ()
    optional: tuple[str, ...] = ()


PLATFORM_CREDENTIALS: Mapping[str, PlatformCredentials] = {
    "local": PlatformCredentials(),
    "docker": PlatformCredentials(optional=("NGC_KEY", "HF_TOKEN")),
    "kubernetes": PlatformCredentials(
        optional=("KUBECONFIG", "TAO_K8S_NAMESPACE", "TAO_K8S_CONTEXT", "NGC_KEY", "HF_TOKEN")
    ),
    "slurm": PlatformCredentials(
        required=("SLURM_USER", "SLURM_HOSTNAME", "SLURM_PARTITION"),
        one_of=(("SSH_KEY_PATH", "SSH_AUTH_SOCK"),),
        optional=("SLURM_ACCOUNT", "NGC_KEY", "HF_TOKEN"),
    ),
}

# Batch-size rule of thumb of DEFT's pre-flight: <= 16 fits a 48 GB GPU, <= 8 a 24 GB one (64 OOMs on 48 GB).
# The bounds sit a little above the nominal sizes because nvidia-smi reports e.g. 49140 MiB for "48 GB".
BATCH_RULES_GIB: tuple[tuple[float, int], ...] = ((26.0, 8), (50.0, 16))
MIN_GPU_MEMORY_GIB = 15.5  # Visual ChangeNet needs a 16 GB GPU at least


# ------------------------------------------------------------------------------------------------ probe


@dataclass(frozen=True)
class GpuInfo:
    """One GPU as the platform reports it; memory None when the driver does not say."""

    name: str
    memory_gib: float | None

    def describe(self) -> str:
        memory = "memory unknown" if self.memory_gib is None else f"{self.memory_gib:.1f} GiB"
        return f"{self.name} ({memory})"


class PlatformProbe(Protocol):
    """Everything the pre-flight learns from outside the config and the workspace; it changes nothing."""

    def gpus(self) -> list[GpuInfo]: ...

    def command_available(self, name: str) -> bool: ...

    def image_present(self, image: str) -> bool | None: ...

    def platform_reachable(self, platform: str) -> tuple[bool, str]: ...


_PROBE_TIMEOUT_S = 20.0
# A command counts as available only when it can start: the reference runtime imports torch, which only the
# `reference` extra installs.
_COMMAND_MODULES = {"aoi-changenet": "torch"}


class HostProbe:
    """The real probe: nvidia-smi, the PATH, `docker image inspect`, `docker info`, kubectl and sinfo."""

    def __init__(self, environ: Mapping[str, str] | None = None, *, timeout_s: float = _PROBE_TIMEOUT_S) -> None:
        self._environ = os.environ if environ is None else environ
        self._timeout_s = timeout_s

    def gpus(self) -> list[GpuInfo]:
        """The GPUs jobs may use: nvidia-smi's list, narrowed by CUDA_VISIBLE_DEVICES when it is set."""
        smi = self._which("nvidia-smi")
        if smi is None:
            return []
        query = "--query-gpu=index,uuid,name,memory.total"
        done = self._run([smi, query, "--format=csv,noheader,nounits"])
        if done is None or done.returncode != 0:
            return []
        listed = [gpu for line in done.stdout.splitlines() if (gpu := parse_gpu_line(line)) is not None]
        return visible_gpus(listed, self._environ.get("CUDA_VISIBLE_DEVICES"))

    def command_available(self, name: str) -> bool:
        """Whether `name` is beside this Python or on PATH (for the reference runtime: and torch is there)."""
        beside = Path(sys.executable).parent / name
        found = (beside.is_file() and os.access(beside, os.X_OK)) or self._which(name) is not None
        module = _COMMAND_MODULES.get(name)
        return found and (module is None or importlib.util.find_spec(module) is not None)

    def image_present(self, image: str) -> bool | None:
        """True/False from `docker image inspect`; None when docker is missing or its daemon is silent."""
        docker = self._which("docker")
        if docker is None:
            return None
        done = self._run([docker, "image", "inspect", "--format", "{{.Id}}", image])
        if done is None:
            return None
        if done.returncode == 0:
            return True
        return False if "no such image" in done.stderr.lower() else None

    def platform_reachable(self, platform: str) -> tuple[bool, str]:
        """Whether jobs can be submitted to `platform` from here, with what was seen."""
        if platform == "local":
            return True, f"this machine ({socket.gethostname()})"
        if platform == "docker":
            return self._answers(["docker", "info", "--format", "{{.ServerVersion}}"], "Docker server {}")
        if platform == "kubernetes":
            namespace = self._environ.get("TAO_K8S_NAMESPACE") or "default"
            ok, seen = self._answers(["kubectl", "auth", "can-i", "create", "jobs", "-n", namespace], "{}")
            if ok and seen.strip().lower() != "yes":
                return False, f"kubectl may not create jobs in namespace {namespace} (answered {seen!r})"
            return ok, f"kubectl may create jobs in namespace {namespace}" if ok else seen
        if platform == "slurm":
            return self._answers(["sinfo", "--noheader", "--format=%P"], "sinfo answers; partitions: {}")
        return False, f"no reachability check exists for platform {platform!r}"

    def _answers(self, argv: list[str], shown: str) -> tuple[bool, str]:
        program = self._which(argv[0])
        if program is None:
            return False, f"{argv[0]} is not on PATH"
        done = self._run([program, *argv[1:]])
        if done is None:
            return False, f"`{' '.join(argv)}` did not answer within {self._timeout_s:g} s"
        if done.returncode != 0:
            reason = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[0]
            return False, f"`{' '.join(argv)}` failed (exit code {done.returncode}): {reason}"
        return True, shown.format(", ".join(done.stdout.split()) or "(none)")

    def _which(self, name: str) -> str | None:
        return shutil.which(name, path=self._environ.get("PATH"))

    def _run(self, argv: list[str]) -> subprocess.CompletedProcess[str] | None:
        try:
            return subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self._timeout_s,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError):
            return None


@dataclass(frozen=True)
class ListedGpu:
    """One line of `nvidia-smi --query-gpu=index,uuid,name,memory.total --format=csv,noheader,nounits`."""

    index: int
    uuid: str
    gpu: GpuInfo


def parse_gpu_line(line: str) -> ListedGpu | None:
    """`0, GPU-ab12.., NVIDIA H100 80GB HBM3, 81559` -> ListedGpu; None for a line of another shape."""
    parts = [part.strip() for part in line.split(",")]
    if len(parts) < 4 or not parts[0].isdigit():
        return None
    name = ", ".join(parts[2:-1])  # a name holding a comma keeps it
    try:
        memory: float | None = float(parts[-1]) / 1024.0
    except ValueError:
        memory = None  # "[N/A]" on some boards
    return ListedGpu(int(parts[0]), parts[1], GpuInfo(name, memory))


def visible_gpus(listed: Sequence[ListedGpu], cuda_visible_devices: str | None) -> list[GpuInfo]:
    """The listed GPUs CUDA_VISIBLE_DEVICES lets a job see (indices or UUIDs), in its order."""
    if cuda_visible_devices is None:
        return [entry.gpu for entry in listed]
    by_token = {str(entry.index): entry for entry in listed} | {entry.uuid: entry for entry in listed}
    seen: dict[int, GpuInfo] = {}
    for token in (part.strip() for part in cuda_visible_devices.split(",")):
        entry = by_token.get(token)
        if entry is None:
            break  # CUDA ignores every device after the first invalid entry ("-1" hides them all)
        seen.setdefault(entry.index, entry.gpu)
    return list(seen.values())


# ----------------------------------------------------------------------------------------------- report


@dataclass(frozen=True)
class PreflightSection:
    """One of the nine sections; `lines` are markdown."""

    number: int
    title: str
    lines: tuple[str, ...]


@dataclass(frozen=True)
class PreflightReport:
    """The outcome of the pre-flight: the nine sections, what blocks approval, and the plan to approve."""

    sections: tuple[PreflightSection, ...]
    blockers: tuple[Problem, ...]
    warnings: tuple[str, ...]
    plan: dict[str, Any]
    plan_hash: str
    run_name: str

    @property
    def ok(self) -> bool:
        return not self.blockers

    def status_line(self) -> str:
        if self.ok:
            return f"READY FOR APPROVAL: plan {self.plan_hash}"
        return f"BLOCKED: {len(self.blockers)} problem(s) to fix before the run can be approved"

    def markdown(self) -> str:
        """The plan for the Prefect markdown artifact and the approval gate."""
        out = [f"# Pre-flight of {self.run_name}", "", f"**{self.status_line()}**", ""]
        if self.blockers:
            out += [f"## Blockers ({len(self.blockers)})", ""]
            out += [f"- **{_md(p.where)}**: {_md(p.what)}. Fix: {_md(p.fix)}" for p in self.blockers]
            out.append("")
        if self.warnings:
            out += [f"## Warnings ({len(self.warnings)})", "", *(f"- {_md(w)}" for w in self.warnings), ""]
        for section in self.sections:
            out += [f"## {section.number}. {section.title}", "", *section.lines, ""]
        return "\n".join(out).rstrip() + "\n"

    def text(self) -> str:
        """The same plan for a terminal: plain lines, aligned tables, no markdown."""
        out = [f"PRE-FLIGHT {self.run_name}", self.status_line(), ""]
        if self.blockers:
            out.append(f"Blockers ({len(self.blockers)}):")
            for problem in self.blockers:
                out += [f"  - {problem.where}: {problem.what}", f"    Fix: {problem.fix}"]
            out.append("")
        if self.warnings:
            out += [f"Warnings ({len(self.warnings)}):", *(f"  - {w}" for w in self.warnings), ""]
        for section in self.sections:
            heading = f"{section.number}. {section.title}"
            out += [heading, "-" * len(heading), *_plain(section.lines), ""]
        return "\n".join(out).rstrip() + "\n"


def run_preflight(
    config: PipelineConfig,
    *,
    run_name: str,
    environ: Mapping[str, str] | None = None,
    probe: PlatformProbe | None = None,
) -> PreflightReport:
    """Run every read-only check of the three phases and return the nine-section plan; writes nothing."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    return _Preflight(config, run_name, env, probe or HostProbe(env)).run()


# ------------------------------------------------------------------------------------------------ facts


@dataclass(frozen=True)
class _SetRow:
    name: str
    path: Path
    rows: int | None
    labels: Mapping[str, int]
    status: str = ""


@dataclass(frozen=True)
class _Data:
    workspace: Workspace
    sets: tuple[_SetRow, ...]
    leakage: Mapping[tuple[str, str], int]
    notes: tuple[str, ...]


@dataclass(frozen=True)
class _PhaseSpace:
    swept: tuple[SearchParam, ...]
    dropped_architecture: tuple[str, ...]


@dataclass(frozen=True)
class _Gpus:
    detected: tuple[GpuInfo, ...] | None  # None: not probed from here (remote platform)
    count: int | str  # GPUs the run may use, or "auto" for a remote platform deciding itself
    per_job: int

    def slots(self, parallel: int) -> int:
        if not isinstance(self.count, int) or self.count == 0 or self.per_job == 0:
            return parallel
        return max(1, min(parallel, self.count // self.per_job))


class _Preflight:
    """One pre-flight run: each check adds blockers/warnings and returns what its sections show."""

    def __init__(self, config: PipelineConfig, run_name: str, environ: Mapping[str, str], probe: PlatformProbe) -> None:
        self.config = config
        self.run_name = run_name
        self.environ = environ
        self.probe = probe
        self.workspace = Workspace.at(config.workspace)
        self.run_dir = config.resolved_results_root / run_name
        self.layout = RunLayout(self.run_dir)
        self.blockers: list[Problem] = []
        self.warnings: list[str] = []

    def _check_results_root(self) -> None:
        """DEFT's cumulative training CSVs are workspace-relative, so its run directories live in the workspace."""
        if self.config.deft.max_iterations == 0:
            return
        root = Path(os.path.abspath(self.config.resolved_results_root))
        workspace = Path(os.path.abspath(self.config.workspace))
        if not root.is_relative_to(workspace):
            self.blockers.append(
                Problem(
                    "results_root",
                    f"{root} is outside the workspace {workspace}, but DEFT iterations write workspace-relative "
                    "training CSVs (synthetic and mined images under the run directory)",
                    "leave results_root unset (it defaults to <workspace>/results) or point it inside the workspace",
                )
            )

    @property
    def mining(self) -> bool:
        return self.config.deft.max_iterations > 0

    def run(self) -> PreflightReport:
        self._check_results_root()
        base = self._build_base_spec()
        data = self._check_data(base)
        contract = self._check_kpi_target()
        spaces = self._check_search_spaces(base)
        self._check_job_specs(base, spaces)
        gpus = self._check_gpus(base)
        host = self._check_platform_and_runtime()
        credentials = self._credential_lines()
        images = self._image_lines()
        sections = (
            host + self._gpu_lines(gpus),
            credentials,
            images,
            self._dataset_lines(data),
            self._phase1_lines(contract, spaces.get("phase1"), gpus),
            self._phase2_lines(contract, gpus),
            self._phase3_lines(contract, spaces.get("phase3"), gpus),
            self._estimate_lines(gpus),
            self._confirmation_lines(),
        )
        plan = self._plan(contract, base, spaces, gpus)
        return PreflightReport(
            sections=tuple(
                PreflightSection(number, title, tuple(lines))
                for number, (title, lines) in enumerate(zip(SECTION_TITLES, sections, strict=True), start=1)
            ),
            blockers=tuple(self.blockers),
            warnings=tuple(self.warnings),
            plan=plan,
            plan_hash=hash_of_plan(plan),
            run_name=self.run_name,
        )

    # -------------------------------------------------------------------------------------- data

    def _batch_sizes(self, base: Spec | None) -> dict[str, int]:
        """The batch size of every training the plan runs, by the config key that sets it."""
        sizes = {
            f"{phase}.batch_size": settings.batch_size
            for phase, settings in (("phase1", self.config.phase1), ("phase3", self.config.phase3))
            if settings.enabled
        }
        if not self.config.phase1.enabled:
            sizes["base spec dataset.classify.batch_size (baseline training)"] = self._baseline_batch(base)
        return sizes

    def _baseline_batch(self, base: Spec | None) -> int:
        """Without Phase 1 the baseline trains with the base spec's batch size (else the Phase 1 one)."""
        batch = None if base is None else get_key_or(base, "dataset.classify.batch_size", None)
        return batch if isinstance(batch, int) else self.config.phase1.batch_size

    def _check_data(self, base: Spec | None) -> _Data:
        batch_sizes = self._batch_sizes(base)
        try:
            report = check_workspace(
                self.config.workspace,
                lights=self.config.dataset.lights,
                image_ext=self.config.dataset.image_ext,
                batch_size=max(batch_sizes.values(), default=None),
            )
        except DatasetError as error:
            pool_problems = [p for p in error.problems if self._about_pool(p)]
            self.blockers += [p for p in error.problems if not self._about_pool(p)]
            self._pool_problems(pool_problems)
            return self._data_without_report()
        if report.pool_rows is None and self.mining:
            self._pool_problems(
                [
                    Problem(
                        str(self.workspace.mining_pool_csv),
                        "the mining pool does not exist, and every DEFT iteration mines real images from it",
                        "put the production pool CSV there, or set deft.max_iterations: 0",
                    )
                ]
            )
        sets = tuple(_SetRow(s.name, s.path, s.rows, s.label_counts) for s in report.csvs)
        if report.pool_rows is None:
            sets += (_SetRow(MINING_POOL, self.workspace.mining_pool_csv, None, {}, "absent"),)
        return _Data(self.workspace, sets, report.leakage, report.notes)

    def _about_pool(self, problem: Problem) -> bool:
        pool = str(self.workspace.mining_pool_csv)
        leak = f"{MINING_POOL} row" in problem.what or f"shared with {MINING_POOL}" in problem.what
        return problem.where.startswith(pool) or leak

    def _pool_problems(self, problems: Sequence[Problem]) -> None:
        if self.mining:
            self.blockers += problems
            return
        self.warnings += [
            f"{problem} (not a blocker: deft.max_iterations is 0, so no iteration mines the pool)"
            for problem in problems
        ]

    def _data_without_report(self) -> _Data:
        """What can still be shown when the data check failed: rows, labels and base-set leakage."""
        sets: list[_SetRow] = []
        readable = {}
        for name in (TRAINING, VALIDATION, KPI):
            path = self.workspace.csv_path(name)
            try:
                csv = read_dataset_csv(path)
            except DatasetError:
                sets.append(_SetRow(name, path, None, {}, "missing" if not path.exists() else "unreadable"))
                continue
            readable[name] = csv
            sets.append(_SetRow(name, path, len(csv.rows), csv.label_counts()))
        sets.append(self._pool_row_unchecked())
        lights, ext = self.config.dataset.lights, self.config.dataset.image_ext
        keys = {
            name: sample_keys(CsvInRoot(csv, self.workspace.images_dir), lights=lights, image_ext=ext)
            for name, csv in readable.items()
        }
        leakage = {
            (left, right): len(leaks_between(keys[left], keys[right]))
            for i, left in enumerate(SET_NAMES)
            for right in SET_NAMES[i + 1 :]
            if left in keys and right in keys
        }
        note = "the data check failed (see blockers): leakage is counted between the readable base sets only"
        return _Data(self.workspace, tuple(sets), leakage, (note,))

    def _pool_row_unchecked(self) -> _SetRow:
        path = self.workspace.mining_pool_csv
        if not path.exists():
            return _SetRow(MINING_POOL, path, None, {}, "absent")
        try:
            table = read_csv_table(path, required_columns=("label",), allow_bom=True, role="mining pool CSV")
        except DatasetError:
            return _SetRow(MINING_POOL, path, None, {}, "unreadable")
        labels: dict[str, int] = {}
        for row in table.rows:
            labels[row.get("label", "")] = labels.get(row.get("label", ""), 0) + 1
        return _SetRow(MINING_POOL, path, len(table.rows), labels, "not resolved")

    # ------------------------------------------------------------------------------- KPI and specs

    def _check_kpi_target(self) -> MetricContract | None:
        try:
            return parse_target(self.config.kpi_target)
        except AoiPipelineError as error:
            self.blockers += [
                Problem(f"pipeline config key kpi_target ({p.where})", p.what, p.fix) for p in error.problems
            ]
            return None

    def _build_base_spec(self) -> Spec | None:
        source = spec_source(self.config, self.workspace)
        if source is not None:
            try:
                load_spec(source)
            except AoiPipelineError as error:
                named = self.config.spec_file is not None
                self.blockers += [
                    Problem(f"pipeline config key spec_file ({p.where})" if named else p.where, p.what, p.fix)
                    for p in error.problems
                ]
                return None
        try:
            return workspace_base_spec(self.config, self.workspace)
        except AoiPipelineError as error:
            # The source loaded, so what failed is the config's layer on top of it.
            self.blockers += [
                Problem(f"pipeline config key spec_overrides ({p.where})", p.what, p.fix) for p in error.problems
            ]
            return None

    def _check_search_spaces(self, base: Spec | None) -> dict[str, _PhaseSpace]:
        spaces = {}
        for phase, settings, warm in (
            ("phase1", self.config.phase1, False),
            ("phase3", self.config.phase3, True),
        ):
            if settings.enabled:
                space = self._phase_space(phase, settings, warm, base)
                if space is not None:
                    spaces[phase] = space
        return spaces

    def _phase_space(
        self, phase: str, settings: AutomlSettings, warm_start: bool, base: Spec | None
    ) -> _PhaseSpace | None:
        overrides = {key: None if value is None else value.model_dump() for key, value in settings.search_space.items()}
        try:
            full = build_search_space(overrides)
        except AoiPipelineError as error:
            self.blockers += [Problem(f"pipeline config key {phase}.{p.where}", p.what, p.fix) for p in error.problems]
            return None
        swept = build_search_space(overrides, warm_start=warm_start)
        known = []
        for param in swept:
            where = self._search_key_where(phase, settings, param.key)
            try:
                if base is not None:
                    set_key(base, param.key, _corner(param, high=False))
                known.append(param)
            except AoiPipelineError as error:
                self.blockers += [Problem(where, p.what, p.fix) for p in error.problems]
            if param.key in self._overridden_keys(settings):
                self.warnings.append(
                    f"{where} sweeps {param.key}, which spec_overrides also sets: each trial's sampled value "
                    f"replaces the override (pin it with {phase}.search_space: {{{param.key}: null}} instead)"
                )
        dropped = tuple(param.key for param in full if param not in swept)
        # Unknown keys are blockers already; the trial specs are still checked with the known ones.
        return _PhaseSpace(tuple(known), dropped)

    def _search_key_where(self, phase: str, settings: AutomlSettings, key: str) -> str:
        if key in settings.search_space:
            return f'pipeline config key {phase}.search_space["{key}"]'
        return f"default search space of {phase}: {key}"

    def _overridden_keys(self, settings: AutomlSettings) -> set[str]:
        keys = set()
        for text in (*self.config.spec_overrides, *settings.spec_overrides):
            try:
                keys.add(parse_override(text)[0])
            except AoiPipelineError:
                continue  # reported where the override is applied
        return keys

    def _check_job_specs(self, base: Spec | None, spaces: Mapping[str, _PhaseSpace]) -> None:
        """Build and validate, at both corners of the search space, the specs the first jobs will run."""
        if base is None:
            return
        if self.config.phase1.enabled:
            if "phase1" in spaces:
                self._check_trial_specs("phase1", self.config.phase1, base, spaces["phase1"].swept, None)
        else:
            settings = self.config.phase1.model_copy(
                update={
                    "num_epochs": self.config.deft.num_epochs,
                    "batch_size": self._baseline_batch(base),
                    "spec_overrides": (),
                }
            )
            self._check_trial_specs("baseline", settings, base, (), None)
        if self.config.phase3.enabled and "phase3" in spaces:
            warm = self.layout.train_dir("baseline") / "phase2_best.pth"
            self._check_trial_specs("phase3", self.config.phase3, base, spaces["phase3"].swept, warm)

    def _check_trial_specs(
        self,
        phase: str,
        settings: AutomlSettings,
        base: Spec,
        space: Sequence[SearchParam],
        warm_start: Path | None,
    ) -> None:
        trial_dir = self.layout.trial_dir(phase, 0) if phase != "baseline" else self.layout.iteration_dir(phase)
        label = f"{phase} training spec"
        found: dict[str, Problem] = {}
        # Both ends of every range: a range reaching outside what the spec allows fails at one of them.
        for high in (False, True):
            params = {param.key: _corner(param, high=high) for param in space}
            try:
                train = training_spec(
                    base,
                    results_dir=trial_dir / "train",
                    num_epochs=settings.num_epochs,
                    batch_size=settings.batch_size,
                    params=params,
                    pretrained_model=warm_start,
                    extra_overrides=settings.spec_overrides,
                )
                validate_spec(train, action="train", where=label)
                infer = inference_spec(
                    train,
                    checkpoint=trial_dir / "train" / "model.pth",
                    csv_path=self.workspace.validation_csv,
                    images_dir=self.workspace.images_dir,
                    results_dir=trial_dir / "val_inference",
                )
                validate_spec(infer, action="inference", where=f"{phase} validation inference spec")
            except AoiPipelineError as error:
                for problem in error.problems:
                    named = self._spec_problem(phase, settings, problem, label)
                    found.setdefault(f"{named.where}|{named.what}", named)
        self.blockers += found.values()

    def _spec_problem(self, phase: str, settings: AutomlSettings, problem: Problem, label: str) -> Problem:
        """Name the config key behind a spec problem where there is one."""
        prefixed = problem.where.startswith(f"{phase} ") and ": " in problem.where
        key = problem.where.split(": ", 1)[1] if prefixed else problem.where
        if key in settings.search_space:
            return Problem(f'pipeline config key {phase}.search_space["{key}"]', problem.what, problem.fix)
        pinned = {"train.num_epochs": "num_epochs", "dataset.classify.batch_size": "batch_size"}
        if key in pinned and phase != "baseline":
            return Problem(f"pipeline config key {phase}.{pinned[key]}", problem.what, problem.fix)
        if key in self._overridden_keys(settings):
            return Problem(f"pipeline config key {phase}.spec_overrides ({key})", problem.what, problem.fix)
        return problem if prefixed else Problem(f"{label}: {key}", problem.what, problem.fix)

    # ------------------------------------------------------------------------------ platform, runtime

    def _check_platform_and_runtime(self) -> list[str]:
        config = self.config
        lines = [
            f"- Workspace: `{self.workspace.root}`",
            f"- Results directory: `{self.run_dir}` (computed; created only after approval)",
            f"- Host: {socket.gethostname()}",
            f"- Network architecture: {NETWORK_ARCH}",
            f"- Network mode: {self._network_mode()}",
            f"- Python: `{sys.executable}`",
        ]
        if config.platform == "local":
            lines.append("- Platform: local (jobs run as processes on this machine)")
            lines.append(self._runtime_line())
        else:
            reachable, seen = self.probe.platform_reachable(config.platform)
            lines.append(f"- Platform: {config.platform}: {'reachable' if reachable else 'UNREACHABLE'} ({seen})")
            if not reachable:
                self.blockers.append(
                    Problem(
                        f"platform {config.platform} (pipeline config key platform)",
                        f"cannot be reached from this machine: {seen}",
                        f"start or configure {config.platform} (see the README's platform section), "
                        "or set platform: local",
                    )
                )
            lines.append(f"- Runtime: {config.runtime} (`{RUNTIME_COMMANDS[config.runtime]}` inside the images)")
        timeout = config.job_timeout_minutes
        lines.append(f"- Job timeout: {f'{timeout:g} min per job' if timeout else 'none'}")
        return lines

    def _network_mode(self) -> str:
        if self.environ.get("AIR_GAPPED") == "1":
            return "air-gapped (AIR_GAPPED=1): nothing is fetched; images must be present"
        return "network-enabled (default)"

    def _runtime_line(self) -> str:
        runtime = self.config.runtime
        command = RUNTIME_COMMANDS[runtime]
        if self.probe.command_available(command):
            return f"- Runtime: {runtime} (`{command}` found)"
        if runtime == "reference":
            what = f"the reference runtime `{command}` is found neither beside {sys.executable} nor on PATH"
            fix = REFERENCE_INSTALL_FIX
        else:
            what = f"the TAO command `{command}` is not on PATH"
            fix = "run where TAO PyTorch (visual_changenet) is installed, or set runtime: reference"
        self.blockers.append(Problem("pipeline config key runtime", what, fix))
        return f"- Runtime: {runtime} (`{command}` MISSING)"

    # ----------------------------------------------------------------------------------- credentials

    def _credential_lines(self) -> list[str]:
        platform = self.config.platform
        rules = PLATFORM_CREDENTIALS.get(platform, PlatformCredentials())
        needs: dict[str, str] = {}
        for name in self.config.credentials:
            needs.setdefault(name, "required by the pipeline config (credentials)")
        for name in rules.required:
            needs.setdefault(name, f"required by platform {platform}")
        for group in rules.one_of:
            for name in group:
                needs.setdefault(name, f"one of {' / '.join(group)} (platform {platform})")
        for name in rules.optional:
            needs.setdefault(name, f"optional (platform {platform})")
        for name, need in needs.items():
            if need.startswith("required") and self._status(name) == "UNSET":
                self.blockers.append(
                    Problem(
                        f"environment variable {name}",
                        f"is unset but {need.removeprefix('required by ')} needs it",
                        f"export {name} in the environment that runs the pipeline (its value is never shown)",
                    )
                )
        for group in rules.one_of:
            if all(self._status(name) == "UNSET" for name in group):
                self.blockers.append(
                    Problem(
                        f"environment variables {' / '.join(group)}",
                        f"are all unset but platform {platform} needs one of them",
                        f"export {group[0]} (preferred) or {' or '.join(group[1:])}",
                    )
                )
        if not needs:
            return [f"- None needed for platform {platform}."]
        rows = [(name, need, self._status(name)) for name, need in needs.items()]
        return [
            "Presence only (SET/UNSET): values are never read or shown.",
            "",
            *_table(("variable", "needed", "status"), rows),
        ]

    def _status(self, name: str) -> str:
        # Like `[ -n "$VAR" ]`: set and non-empty. The value itself goes nowhere.
        return "SET" if self.environ.get(name) else "UNSET"

    # ---------------------------------------------------------------------------------------- images

    def _used_images(self) -> dict[str, str]:
        images = self.config.images
        used = {"train": images.train, "inference": images.inference}
        if self.mining:
            used |= {"embed": images.embed, "sdg": images.sdg}
        return used

    def _image_lines(self) -> list[str]:
        platform, runtime = self.config.platform, self.config.runtime
        used = self._used_images()
        if platform == "local":
            how = "the reference runtime" if runtime == "reference" else "visual_changenet"
            rows = [(role, uri, "not used: runs without containers") for role, uri in used.items()]
            return [
                f"Platform local runs jobs with {how} on this machine; the images are recorded only.",
                "",
                *_table(("job", "image", "status"), rows),
            ]
        if platform != "docker":
            rows = [
                (role, uri, f"pulled by the {platform} nodes (not checked from here)") for role, uri in used.items()
            ]
            return _table(("job", "image", "status"), rows)
        statuses = {uri: self.probe.image_present(uri) for uri in dict.fromkeys(used.values())}
        shown = {True: "PRESENT", False: "MISSING", None: "UNKNOWN (docker did not answer)"}
        rows = [(role, uri, shown[statuses[uri]]) for role, uri in used.items()]
        missing = [uri for uri, present in statuses.items() if present is False]
        lines = _table(("job", "image", "status"), rows)
        if missing:
            lines += ["", f"{len(missing)} MISSING image(s) will be pulled after approval (not a blocker)."]
            if self.environ.get("AIR_GAPPED") == "1":
                self.blockers += [
                    Problem(f"image {uri}", "is missing and the machine is air-gapped", "load it with docker load")
                    for uri in missing
                ]
            elif any(uri.startswith("nvcr.io/") for uri in missing) and not self.environ.get("NGC_KEY"):
                self.warnings.append("NGC_KEY is UNSET: pulling private nvcr.io images after approval may fail")
        return lines

    # ------------------------------------------------------------------------------------------- GPUs

    def _check_gpus(self, base: Spec | None) -> _Gpus:
        config = self.config
        if config.platform in ("kubernetes", "slurm"):
            return _Gpus(None, config.gpus, config.gpus_per_job)
        detected = tuple(self.probe.gpus())
        count = len(detected) if config.gpus == "auto" else config.gpus
        if isinstance(config.gpus, int) and config.gpus > len(detected):
            self.blockers.append(
                Problem(
                    "pipeline config key gpus",
                    f"asks for {config.gpus} GPU(s) but {len(detected)} are visible on this machine"
                    f"{': ' + ', '.join(g.describe() for g in detected) if detected else ''}",
                    "lower gpus (or set gpus: auto), or run where that many GPUs are visible (nvidia-smi -L)",
                )
            )
        per_job = config.gpus_per_job if count else 0
        if count and config.gpus_per_job > count:
            self.blockers.append(
                Problem(
                    "pipeline config key gpus_per_job",
                    f"one job asks for {config.gpus_per_job} GPU(s) but the run has {count}",
                    f"set gpus_per_job to at most {count}",
                )
            )
        gpus = _Gpus(detected, count, per_job)
        if count == 0 and config.runtime == "tao":
            self.warnings.append("no GPU for the run: TAO Visual ChangeNet needs a CUDA GPU")
        for phase, settings in (("phase1", config.phase1), ("phase3", config.phase3)):
            if settings.enabled and settings.parallel > gpus.slots(settings.parallel):
                self.warnings.append(
                    f"{phase}.parallel is {settings.parallel} but {count} GPU(s) at {per_job} per job give "
                    f"{gpus.slots(settings.parallel)} slot(s): the other trials wait for a free slot"
                )
        if count:
            self._check_batch_memory(detected[: int(count)], base)
        return gpus

    def _check_batch_memory(self, gpus: Sequence[GpuInfo], base: Spec | None) -> None:
        memories = [gpu.memory_gib for gpu in gpus if gpu.memory_gib is not None]
        if not memories:
            return
        smallest = min(memories)
        if smallest < MIN_GPU_MEMORY_GIB:
            self.warnings.append(
                f"the smallest GPU has {smallest:.1f} GiB: Visual ChangeNet needs a 16 GB GPU at least"
            )
        limit = next((batch for bound, batch in BATCH_RULES_GIB if smallest <= bound), None)
        if limit is None:
            return
        for key, size in self._batch_sizes(base).items():
            if size > limit:
                self.warnings.append(
                    f"{key} is {size}, above the rule of thumb for a {smallest:.0f} GiB GPU "
                    f"(<= {limit}; 16 fits 48 GB, 8 fits 24 GB): lower it to {limit} to avoid running out "
                    "of memory"
                )

    def _gpu_lines(self, gpus: _Gpus) -> list[str]:
        if gpus.detected is None:
            requested = "decided by the platform" if gpus.count == "auto" else f"{gpus.count}"
            return [f"- GPUs: on the {self.config.platform} nodes (not probed from here); requested: {requested}"]
        listed = [f"  - {index}: {gpu.describe()}" for index, gpu in enumerate(gpus.detected)]
        detected = f"{len(gpus.detected)} detected" if gpus.detected else "none detected"
        used = "CPU only" if not gpus.count else f"{gpus.count} for the run, {gpus.per_job} per job"
        return [f"- GPUs: {detected}; {used}", *listed]

    def _compute_text(self, gpus: _Gpus) -> str:
        if gpus.detected is None:
            count = "GPUs as the platform decides" if gpus.count == "auto" else f"{gpus.count} GPU(s)"
            return f"{count} on {self.config.platform}"
        if not gpus.count:
            return "CPU only"
        models = sorted({gpu.describe() for gpu in gpus.detected[: int(gpus.count)]})
        return f"{gpus.count} GPU(s) · {', '.join(models)}"

    # -------------------------------------------------------------------------------------- datasets

    def _dataset_lines(self, data: _Data) -> list[str]:
        root = data.workspace.root
        rows = []
        for row in data.sets:
            labels = ", ".join(f"{label} {count}" for label, count in row.labels.items())
            rows.append(
                (
                    row.name,
                    _relative(row.path, root),
                    "-" if row.rows is None else str(row.rows),
                    f"{labels} ({row.status})" if row.status and labels else labels or row.status,
                )
            )
        lines = [
            f"- Images: `{data.workspace.images_dir}`",
            "",
            *_table(("set", "file", "rows", "labels"), rows, right=(2,)),
        ]
        kpi = next((row for row in data.sets if row.name == KPI and row.rows), None)
        if kpi is not None:
            shares = ", ".join(
                f"{label} {count} ({100 * count / kpi.rows:.1f}%)" for label, count in kpi.labels.items()
            )
            lines += ["", f"- KPI label distribution: {shares}"]
        lines += ["", "Leakage between sets (must read 0 overlapping rows):", ""]
        leak_rows = [(f"{a} / {b}", str(count)) for (a, b), count in data.leakage.items()]
        lines += _table(("sets", "overlapping rows"), leak_rows, right=(1,)) if leak_rows else ["- not counted"]
        lines += ["", "- Pre-generated SDG images: none (SDG runs inside each DEFT iteration)"]
        if data.notes:
            lines += ["", *(f"- Note: {note}" for note in data.notes)]
        return lines

    # ---------------------------------------------------------------------------------------- phases

    def _metric_text(self, contract: MetricContract | None) -> str:
        recall = contract.recall_target_pct if contract is not None else None
        at = f"Recall={recall:g}%" if recall is not None else "the contract's recall"
        return (
            f"FAR at {at} on the validation set, minimised (ties: lower val_loss; a trial scoring every "
            "validation row alike is rejected); the KPI set is never used by AutoML"
        )

    def _space_table(self, space: _PhaseSpace | None) -> list[str]:
        if space is None:
            return ["- Swept keys: not shown (the search space has blockers)"]
        rows = [(f"`{p.key}`", p.kind, _range_text(p)) for p in space.swept]
        return ["Swept keys:", "", *_table(("spec key", "type", "range"), rows)]

    def _automl_common(
        self, phase: str, settings: AutomlSettings, contract: MetricContract | None, gpus: _Gpus
    ) -> list[str]:
        overrides = ", ".join(f"`{o}`" for o in settings.spec_overrides) or "none"
        return [
            f"- Algorithm: Optuna TPE (multivariate, constant liar for parallel trials), seed {settings.seed}",
            f"- Recommendations: {settings.recommendations} (each one training job + one validation inference)",
            f"- Parallel trial slots: {settings.parallel} configured, {gpus.slots(settings.parallel)} usable",
            f"- Metric: {self._metric_text(contract)}",
            f"- Validation set: `{self.workspace.validation_csv}`",
            f"- Pinned: train.num_epochs = {settings.num_epochs}, dataset.classify.batch_size = "
            f"{settings.batch_size}; spec overrides: {overrides}",
            f"- Results: `{self.layout.phase_dir(phase)}` (the Optuna study is stored there; created after approval)",
        ]

    def _phase1_lines(self, contract: MetricContract | None, space: _PhaseSpace | None, gpus: _Gpus) -> list[str]:
        settings = self.config.phase1
        source = spec_source(self.config, self.workspace)
        spec_line = f"- Spec source: `{source}`" if source else "- Spec source: the built-in DEFT baseline spec"
        if not settings.enabled:
            return [
                "- Disabled: Phase 2 trains its baseline from the base spec (no sweep)",
                spec_line,
            ]
        return [
            *self._automl_common("phase1", settings, contract, gpus),
            f"- Training set: `{self.workspace.training_csv}`",
            spec_line,
            "",
            *self._space_table(space),
        ]

    def _phase2_lines(self, contract: MetricContract | None, gpus: _Gpus) -> list[str]:
        deft = self.config.deft
        target = render_target(contract) if contract is not None else f"{self.config.kpi_target} (INVALID)"
        iterations = (
            f"{deft.max_iterations}"
            if deft.max_iterations
            else "0 (baseline inference and evaluation only, no improvement iterations)"
        )
        if self.config.phase1.enabled:
            baseline = (
                f"`{self.layout.train_dir('baseline')}` pre-seeded with Phase 1's winning checkpoint (no retrain)"
            )
        else:
            baseline = f"trained into `{self.layout.train_dir('baseline')}` from the base spec (Phase 1 is disabled)"
        resuming = (
            f"yes: `{self.run_dir}` exists; the run continues at its first unfinished stage"
            if self.run_dir.exists()
            else "no (fresh run directory)"
        )
        rows = [
            ("KPI target", target),
            ("Max DEFT iterations", iterations),
            (
                "Stop condition",
                "KPI contract met or max iterations reached (not guaranteed: FAR may regress)",
            ),
            ("Training epochs (per iteration)", str(deft.num_epochs)),
            ("Num SDG (per iteration)", str(deft.num_sdg)),
            ("Mining top-K (per target)", str(deft.top_k_per_target)),
            ("Mining cutoff", f"cosine similarity >= {deft.min_similarity:g}"),
            ("Compute / GPUs", self._compute_text(gpus)),
            ("Resuming", resuming),
            ("Baseline", baseline),
            ("DEFT's own gate", "auto-approved by the consolidated gate"),
            ("Hard stops (end the run)", ", ".join(HARD_STOPS)),
        ]
        return _table(("field", "value"), rows)

    def _phase3_lines(self, contract: MetricContract | None, space: _PhaseSpace | None, gpus: _Gpus) -> list[str]:
        settings = self.config.phase3
        if not settings.enabled:
            return ["- Disabled: Phase 2's best model is the deliverable"]
        train_csv = (
            "Phase 2's cumulative training CSV"
            if self.mining
            else f"`{self.workspace.training_csv}` (Phase 2 adds no rows while deft.max_iterations is 0)"
        )
        dropped = ", ".join(f"`{key}`" for key in space.dropped_architecture) if space else ""
        return [
            *self._automl_common("phase3", settings, contract, gpus),
            f"- Training set: {train_csv}",
            "- Validation set policy: the same validation set as Phase 1",
            "- Warm start: every trial starts from Phase 2's best checkpoint; architecture keys are pinned"
            + (f" (not swept: {dropped})" if dropped else ""),
            "- Fallback: if Phase 3's winner does not beat Phase 2's best on the KPI contract, Phase 2's best stands",
            "",
            *self._space_table(space),
        ]

    # -------------------------------------------------------------------------------------- estimate

    def _estimate_lines(self, gpus: _Gpus) -> list[str]:
        config = self.config
        n1 = config.phase1.recommendations if config.phase1.enabled else 0
        n3 = config.phase3.recommendations if config.phase3.enabled else 0
        m = config.deft.max_iterations + 1
        t_rec = config.estimates.minutes_per_recommendation
        t_iter = config.estimates.minutes_per_iteration
        terms = [_term(n1, t_rec), _term(m, t_iter), _term(n3, t_rec)]
        lines = [
            "- Formula: N1 × t_rec + M × t_iter + N3 × t_rec",
            f"- N1 = {n1} (Phase 1 recommendations{'' if config.phase1.enabled else '; disabled'}), "
            f"N3 = {n3} (Phase 3 recommendations{'' if config.phase3.enabled else '; disabled'})",
            f"- M = {config.deft.max_iterations} + 1 = {m} (DEFT iterations plus the baseline stage: "
            "inference and evaluation of the starting model, counted as one iteration)",
            f"- t_rec = {_minutes_or_unknown(t_rec)} (estimates.minutes_per_recommendation), "
            f"t_iter = {_minutes_or_unknown(t_iter)} (estimates.minutes_per_iteration)",
        ]
        total = _sum_known(terms)
        shown = " + ".join(text for text, _ in terms)
        if total is None:
            lines += [
                f"- Estimate: {shown} = unknown",
                "- To get a number: set estimates.minutes_per_recommendation and "
                "estimates.minutes_per_iteration in the pipeline config, or time a 1-epoch run "
                "(phase1.recommendations: 1, phase1.num_epochs: 1) and scale it by the epochs",
            ]
            return lines
        lines.append(f"- Estimate: {shown} = {_minutes(total)} of compute")
        wall = _sum_known(
            [
                _term(math.ceil(n1 / gpus.slots(config.phase1.parallel)) if n1 else 0, t_rec),
                _term(m, t_iter),
                _term(math.ceil(n3 / gpus.slots(config.phase3.parallel)) if n3 else 0, t_rec),
            ]
        )
        if wall is not None and wall != total:
            lines.append(f"- Wall clock with the usable parallel trial slots: about {_minutes(wall)}")
        return lines

    def _confirmation_lines(self) -> list[str]:
        if self.blockers:
            return [
                f"**Not ready for approval:** fix the {len(self.blockers)} blocker(s) listed above, "
                "then run the pre-flight again."
            ]
        return [
            "**Approve all three phases?** After approval the run does not pause again until it completes; "
            f"only a hard stop ends it early ({', '.join(HARD_STOPS)}).",
            "",
            "The approval (or a pre-approval with `--yes`) holds for this plan hash only: any change to the "
            "config, the CSVs or the spec needs a new approval.",
        ]

    # ------------------------------------------------------------------------------------------- plan

    def _plan(
        self,
        contract: MetricContract | None,
        base: Spec | None,
        spaces: Mapping[str, _PhaseSpace],
        gpus: _Gpus,
    ) -> dict[str, Any]:
        """What an approval approves. The run name is left out so a re-run of the same plan keeps its hash."""
        return {
            "config": self.config.model_dump(mode="json"),
            "kpi_target": render_target(contract) if contract is not None else None,
            "base_spec_sha256": None if base is None else _json_sha256(base),
            # The mining pool is deliberately not hashed: it is append-only and grows daily, and a nightly
            # pre-approval must survive that. Its rows are checked (and mined) at run time instead.
            "dataset_sha256": {
                name: _file_sha256(self.workspace.csv_path(name)) for name in (TRAINING, VALIDATION, KPI)
            },
            "search_spaces": {phase: [_param_dict(param) for param in space.swept] for phase, space in spaces.items()},
            "images": self._used_images(),
            "platform": self.config.platform,
            "runtime": self.config.runtime,
            "gpus": {"count": gpus.count, "per_job": gpus.per_job},
        }


# --------------------------------------------------------------------------------------------- helpers


def get_key_or(spec: Spec, dotted: str, default: Any) -> Any:
    """The value at `dotted`, or `default` when the spec does not set it."""
    try:
        return get_key(spec, dotted)
    except AoiPipelineError:
        return default


def _corner(param: SearchParam, *, high: bool) -> Any:
    """The value a trial may take at one end of the parameter's range (first/last choice for a list)."""
    if param.kind == "categorical":
        choices = param.choices or (None,)
        return choices[-1] if high else choices[0]
    value = param.high if high else param.low
    return int(value) if param.kind == "int" and value is not None else value


def _range_text(param: SearchParam) -> str:
    if param.kind == "categorical":
        return "one of " + ", ".join(repr(choice) for choice in param.choices or ())
    scale = " (log scale)" if param.log else ""
    return f"{param.low:g} to {param.high:g}{scale}"


def _param_dict(param: SearchParam) -> dict[str, Any]:
    data = asdict(param)
    data["choices"] = None if param.choices is None else list(param.choices)
    return data


def _term(count: int, minutes: float | None) -> tuple[str, float | None]:
    if count == 0:
        return "0", 0.0
    if minutes is None:
        return f"{count} × unknown", None
    return f"{count} × {minutes:g} min", count * minutes


def _sum_known(terms: Sequence[tuple[str, float | None]]) -> float | None:
    values = [value for _, value in terms]
    return None if any(value is None for value in values) else sum(v for v in values if v is not None)


def _minutes(total: float) -> str:
    return f"{total:g} min" if total < 120 else f"{total:g} min (≈ {total / 60:.1f} h)"


def _minutes_or_unknown(minutes: float | None) -> str:
    return "unknown" if minutes is None else f"{minutes:g} min"


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


def _md(text: str) -> str:
    """Text safe inside a markdown line or table cell."""
    return str(text).replace("|", "\\|").replace("\n", " ")


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], *, right: Sequence[int] = ()) -> list[str]:
    rule = ["---:" if index in right else "---" for index in range(len(header))]
    lines = [header, rule, *rows]
    return ["| " + " | ".join(_md(cell) if line is not rule else cell for cell in line) + " |" for line in lines]


_CELL_SPLIT = re.compile(r"(?<!\\)\|")
_RULE_CELL = re.compile(r":?-{3,}:?")


def _plain(lines: Sequence[str]) -> list[str]:
    """Markdown lines as plain text: tables aligned in columns, emphasis and code marks removed."""
    out: list[str] = []
    table: list[list[str]] = []
    for line in [*lines, ""]:
        if line.startswith("|"):
            cells = [_unmark(cell.strip()) for cell in _CELL_SPLIT.split(line.strip()[1:-1])]
            if not all(_RULE_CELL.fullmatch(cell) for cell in cells):
                table.append(cells)
            continue
        if table:
            widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
            out += ["  " + "  ".join(c.ljust(w) for c, w in zip(row, widths, strict=False)).rstrip() for row in table]
            table = []
        out.append(_unmark(line))
    return out[:-1]


def _unmark(text: str) -> str:
    return text.replace("**", "").replace("`", "").replace("\\|", "|")
