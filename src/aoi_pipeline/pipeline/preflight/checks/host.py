"""Checks of section 1: where the run writes, whether the platform accepts jobs, whether the runtime starts,
whether the bucket the run publishes to answers."""

from __future__ import annotations

import os
import sys
from pathlib import Path

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.core.lock import check_unlocked
from aoi_pipeline.errors import Problem, WorkspaceLockedError
from aoi_pipeline.pipeline.preflight.probe import Reachability

RUNTIME_COMMANDS = {"reference": "aoi-changenet", "tao": "visual_changenet"}
REFERENCE_INSTALL_FIX = "install the reference extra: pip install 'aoi-pipeline[reference]'"


def check_results_root(config: PipelineConfig) -> list[Problem]:
    """DEFT's cumulative training CSVs are workspace-relative, so its run directories live in the workspace."""
    if config.deft.max_iterations == 0:
        return []
    root = Path(os.path.abspath(config.resolved_results_root))
    workspace = Path(os.path.abspath(config.workspace))
    if root.is_relative_to(workspace):
        return []
    return [
        Problem(
            "results_root",
            f"{root} is outside the workspace {workspace}, but DEFT iterations write workspace-relative "
            "training CSVs (synthetic and mined images under the run directory)",
            "leave results_root unset (it defaults to <workspace>/results) or point it inside the workspace",
        )
    ]


def check_workspace_lock(config: PipelineConfig) -> list[Problem]:
    """A live run holding the workspace lock blocks: an approved run would be refused at its first write."""
    if not Path(config.workspace).is_dir():
        return []  # the workspace check reports a missing workspace
    try:
        check_unlocked(Path(config.workspace))
    except WorkspaceLockedError as error:
        return list(error.problems)
    return []


def check_platform(platform: str, reachable: Reachability | None) -> list[Problem]:
    """A remote platform that cannot be reached blocks; None means local (nothing to reach). A platform that
    could not be asked (UNKNOWN) blocks nothing by itself: `platform_warnings` shows it."""
    if reachable is None or reachable[0] is not False:
        return []
    return [
        Problem(
            f"platform {platform} (pipeline config key platform)",
            f"cannot be reached from this machine: {reachable[1]}",
            f"start or configure {platform} (see the README's platform section), or set platform: local",
        )
    ]


def platform_warnings(platform: str, reachable: Reachability | None) -> list[str]:
    """What the platform check could not find out: shown beside the plan as UNKNOWN, never as OK."""
    if reachable is None or reachable[0] is not None:
        return []
    return [f"platform {platform}: UNKNOWN, could not be checked from here ({reachable[1]})"]


def check_publish_bucket(config: PipelineConfig, reachable: Reachability | None) -> list[Problem]:
    """The bucket the run publishes to must answer before approval; None means the run publishes nothing."""
    if config.publish is None or reachable is None or reachable[0]:
        return []
    return [
        Problem(
            f"pipeline config key publish.bucket_block ({config.publish.bucket_block})",
            f"the bucket cannot be reached: {reachable[1]}",
            "fix the block or the S3 service (README, Publishing), or remove the publish section",
        )
    ]


def check_runtime(runtime: str, found: bool | None) -> list[Problem]:
    """A local runtime whose command cannot start blocks; None means it runs inside images (not checked)."""
    if found is None or found:
        return []
    command = RUNTIME_COMMANDS[runtime]
    if runtime == "reference":
        what = f"the reference runtime `{command}` is found neither beside {sys.executable} nor on PATH"
        fix = REFERENCE_INSTALL_FIX
    else:
        what = f"the TAO command `{command}` is not on PATH"
        fix = "run where TAO PyTorch (visual_changenet) is installed, or set runtime: reference"
    return [Problem("pipeline config key runtime", what, fix)]


def network_mode(air_gapped: bool) -> str:
    if air_gapped:
        return "air-gapped (AIR_GAPPED=1): nothing is fetched; images must be present"
    return "network-enabled (default)"
