"""The consolidated pre-flight: every read-only check of all three phases, shown as the nine-section plan.

Before the one approval of a run, `run_preflight` checks the workspace and its CSVs (through the core
validators: images, labels, leakage between every pair of sets, the mining pool), the KPI target, the specs
every phase will build, the runtime or container images, the credentials (by name only: a value is never
read beyond "is it set"), the platform and the GPU shape, and it estimates the compute. It collects every
problem instead of stopping at the first: problems that must be fixed before the run may be approved are
blockers, everything else a user should know is a warning. Nothing is written, pulled or launched.

The package has three parts: `probe` (the only contact with the outside, behind the `PlatformProbe`
interface, which asks questions and changes nothing), `checks` (pure functions of the config, the workspace
and the probe's answers, returning what they found) and `plan` (the nine sections, rendered as markdown for
the Prefect artifact and the gate or as plain text by `report`, and the plan an approval approves, with its
hash).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.core.workspace import Workspace
from aoi_pipeline.jobs.gpu import GpuInfo
from aoi_pipeline.pipeline.layout import RunLayout
from aoi_pipeline.pipeline.preflight.checks.credentials import check_credentials
from aoi_pipeline.pipeline.preflight.checks.data import check_data
from aoi_pipeline.pipeline.preflight.checks.findings import Findings
from aoi_pipeline.pipeline.preflight.checks.gpus import check_gpus
from aoi_pipeline.pipeline.preflight.checks.host import (
    RUNTIME_COMMANDS,
    check_platform,
    check_publish_bucket,
    check_results_root,
    check_runtime,
    check_workspace_lock,
    platform_warnings,
)
from aoi_pipeline.pipeline.preflight.checks.images import check_images, used_images
from aoi_pipeline.pipeline.preflight.checks.platform_settings import (
    check_platform_settings,
    kubernetes_environment_warnings,
)
from aoi_pipeline.pipeline.preflight.checks.specs import (
    batch_sizes,
    build_base_spec,
    check_job_specs,
    check_kpi_target,
    check_search_spaces,
)
from aoi_pipeline.pipeline.preflight.measured import measured_minutes
from aoi_pipeline.pipeline.preflight.plan import PlanFacts, build_plan, plan_hash, sections
from aoi_pipeline.pipeline.preflight.probe import (
    HostProbe,
    PlatformProbe,
    ProbeAnswers,
    StaticProbe,
    ask_probe,
    platform_check,
)
from aoi_pipeline.pipeline.preflight.report import PreflightReport, PreflightSection

__all__ = [
    "GpuInfo",
    "HostProbe",
    "PlatformProbe",
    "PreflightReport",
    "PreflightSection",
    "StaticProbe",
    "platform_check",
    "run_preflight",
]


def run_preflight(
    config: PipelineConfig,
    *,
    run_name: str,
    environ: Mapping[str, str] | None = None,
    probe: PlatformProbe | None = None,
) -> PreflightReport:
    """Run every read-only check of the three phases and return the nine-section plan; writes nothing."""
    env: Mapping[str, str] = os.environ if environ is None else environ
    answers = ask_probe(
        probe or HostProbe(env, config=config),
        platform=config.platform,
        runtime_command=RUNTIME_COMMANDS[config.runtime],
        images=used_images(config).values(),
        bucket_block=config.publish.bucket_block if config.publish else None,
    )
    facts, found = _check(config, RunLayout.for_run(config.resolved_results_root, run_name), env, answers)
    plan = build_plan(facts)
    return PreflightReport(
        sections=tuple(
            PreflightSection(number, title, tuple(lines))
            for number, (title, lines) in enumerate(sections(facts, len(found.blockers)), start=1)
        ),
        blockers=found.blockers,
        warnings=found.warnings,
        plan=plan,
        plan_hash=plan_hash(plan),
        run_name=run_name,
    )


def _check(
    config: PipelineConfig, layout: RunLayout, env: Mapping[str, str], answers: ProbeAnswers
) -> tuple[PlanFacts, Findings]:
    """Every check, in the order its findings are listed: the workspace and the specs first, the host last."""
    workspace = Workspace.at(config.workspace)
    found = Findings.of(check_results_root(config)) + Findings.of(check_workspace_lock(config))
    base, problems = build_base_spec(config, workspace)
    found += Findings.of(problems)
    sizes = batch_sizes(config, base)
    data, data_found = check_data(config, workspace, max(sizes.values(), default=None))
    contract, problems = check_kpi_target(config)
    spaces, space_found = check_search_spaces(config, base)
    found += data_found + Findings.of(problems) + space_found
    found += Findings.of(check_job_specs(config, workspace, layout, base, spaces))
    gpus, gpu_found = check_gpus(config, answers.gpus, sizes)
    found += gpu_found + Findings.of(check_platform(config.platform, answers.reachable))
    found += Findings.of(warnings=platform_warnings(config.platform, answers.reachable))
    found += Findings.of(check_platform_settings(config), kubernetes_environment_warnings(config, env))
    found += Findings.of(check_runtime(config.runtime, answers.runtime_found))
    found += Findings.of(check_publish_bucket(config, answers.bucket))
    found += Findings.of(check_credentials(config, env)) + check_images(answers.images, env)
    found += Findings.of(check_platform_settings(config))
    resuming = layout.root.exists()
    measured = measured_minutes(config.resolved_results_root, layout.root.name, config)
    facts = PlanFacts(config, env, workspace, layout, resuming, answers, base, data, contract, spaces, gpus, measured)
    return facts, found
