"""Checks of section 2: the environment variables the config and the platform need, by name only.

A value is never read beyond "is it set": the checks and the plan see SET or UNSET, nothing else.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aoi_pipeline.config import PipelineConfig
from aoi_pipeline.errors import Problem


@dataclass(frozen=True)
class PlatformCredentials:
    """The environment variables a platform needs (automl-pipeline-spec §5.3), by name."""

    required: tuple[str, ...] = ()
    one_of: tuple[tuple[str, ...], ...] = ()
    optional: tuple[str, ...] = ()


PLATFORM_CREDENTIALS: Mapping[str, PlatformCredentials] = {
    "local": PlatformCredentials(),
    "docker": PlatformCredentials(optional=("NGC_KEY", "HF_TOKEN")),
    "kubernetes": PlatformCredentials(optional=("KUBECONFIG", "TAO_K8S_CONTEXT", "NGC_KEY", "HF_TOKEN")),
    # On a login node the Slurm commands run here and need no variable; SLURM_HOSTNAME sends them over ssh.
    "slurm": PlatformCredentials(
        optional=("SLURM_HOSTNAME", "SLURM_PARTITION", "SLURM_ACCOUNT", "NGC_KEY", "HF_TOKEN")
    ),
}
# Over ssh (SLURM_HOSTNAME set), the reference's rules: the user and one ssh identity.
SLURM_OVER_SSH = PlatformCredentials(
    required=("SLURM_USER", "SLURM_HOSTNAME"),
    one_of=(("SSH_KEY_PATH", "SSH_AUTH_SOCK"),),
    optional=("SLURM_PARTITION", "SLURM_ACCOUNT", "NGC_KEY", "HF_TOKEN"),
)


def platform_credentials(platform: str, environ: Mapping[str, str]) -> PlatformCredentials:
    """The platform's rules; Slurm's depend on whether its commands run here or over ssh."""
    if platform == "slurm" and credential_status(environ, "SLURM_HOSTNAME") == "SET":
        return SLURM_OVER_SSH
    return PLATFORM_CREDENTIALS.get(platform, PlatformCredentials())


def credential_status(environ: Mapping[str, str], name: str) -> str:
    # Like `[ -n "$VAR" ]`: set and non-empty. The value itself goes nowhere.
    return "SET" if environ.get(name) else "UNSET"


def credential_needs(config: PipelineConfig, environ: Mapping[str, str]) -> dict[str, str]:
    """Every variable the run may read, with why: the config's own, then the platform's, first reason wins."""
    platform = config.platform
    rules = platform_credentials(platform, environ)
    needs: dict[str, str] = {}
    for name in config.credentials:
        needs.setdefault(name, "required by the pipeline config (credentials)")
    for name in rules.required:
        needs.setdefault(name, f"required by platform {platform}")
    for group in rules.one_of:
        for name in group:
            needs.setdefault(name, f"one of {' / '.join(group)} (platform {platform})")
    for name in rules.optional:
        needs.setdefault(name, f"optional (platform {platform})")
    return needs


def check_credentials(config: PipelineConfig, environ: Mapping[str, str]) -> list[Problem]:
    """An unset required variable blocks, and so does a group of which none is set."""
    blockers = [
        Problem(
            f"environment variable {name}",
            f"is unset but {need.removeprefix('required by ')} needs it",
            f"export {name} in the environment that runs the pipeline (its value is never shown)",
        )
        for name, need in credential_needs(config, environ).items()
        if need.startswith("required") and credential_status(environ, name) == "UNSET"
    ]
    rules = platform_credentials(config.platform, environ)
    for group in rules.one_of:
        if all(credential_status(environ, name) == "UNSET" for name in group):
            blockers.append(
                Problem(
                    f"environment variables {' / '.join(group)}",
                    f"are all unset but platform {config.platform} needs one of them",
                    f"export {group[0]} (preferred) or {' or '.join(group[1:])}",
                )
            )
    return blockers
