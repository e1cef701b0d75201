"""The pre-flight's only contact with the outside: questions to the machine and the platforms, never a change.

`PlatformProbe` is the one interface the pre-flight asks through: the GPUs jobs may use, whether a command
can start, whether a container image is present, whether a platform accepts jobs, the host's name, and
whether the bucket a run publishes to answers. `HostProbe` answers from this machine (nvidia-smi through
`jobs.gpu`, the PATH, `docker image inspect`, one registered reachability check per platform (Kubernetes:
read-only API requests about what the config's Jobs will reference), and a HEAD on the publish bucket
through its S3Bucket block); `StaticProbe` answers from fixed data, for tests and for showing a plan without
touching the machine. A new platform adds its reachability check with
`@platform_check("name")`; nothing else in the pre-flight changes. `ask_probe` asks exactly the questions a
plan needs and returns the answers the pure checks read.
"""

from __future__ import annotations

import importlib.util
import math
import os
import shutil
import socket
import subprocess
import sys
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Protocol

from aoi_pipeline.config import REMOTE_GPU_PLATFORMS, PipelineConfig
from aoi_pipeline.jobs.gpu import GpuInfo, detect_gpus

Reachability = tuple[bool | None, str]
"""Whether jobs can be submitted to a platform from here (None: UNKNOWN, it could not be asked), and what was
seen (shown in the plan)."""

# Platforms whose GPUs live on nodes this machine does not see: the pre-flight does not probe them.
_PROBE_TIMEOUT_S = 20.0
# A command counts as available only when it can start: the reference runtime imports torch, which only the
# `reference` extra installs.
_COMMAND_MODULES = {"aoi-changenet": "torch"}


class PlatformProbe(Protocol):
    """Everything the pre-flight learns from outside the config and the workspace; it changes nothing."""

    def gpus(self) -> list[GpuInfo]: ...

    def command_available(self, name: str) -> bool: ...

    def image_present(self, image: str) -> bool | None: ...

    def platform_reachable(self, platform: str) -> Reachability: ...

    def host_name(self) -> str: ...

    def bucket_reachable(self, block_name: str) -> Reachability: ...


PlatformCheck = Callable[["HostProbe"], Reachability]
_PLATFORM_CHECKS: dict[str, PlatformCheck] = {}


def platform_check(platform: str) -> Callable[[PlatformCheck], PlatformCheck]:
    """Register the reachability check `HostProbe.platform_reachable(platform)` runs (one per platform)."""

    def register(check: PlatformCheck) -> PlatformCheck:
        _PLATFORM_CHECKS[platform] = check
        return check

    return register


@dataclass(frozen=True)
class SlurmJobShape:
    """What each Slurm job of the run asks for; None: SLURM_PARTITION / SLURM_TIME_HOURS, as the reference."""

    partition: str | None = None
    gpus: int = 1
    time_limit: str | None = None

    @classmethod
    def of(cls, config: PipelineConfig | None) -> SlurmJobShape:
        """What the config says (the pool's own defaults are not known here); no config: one GPU."""
        if config is None:
            return cls()
        slurm = config.slurm
        return cls(
            partition=slurm.partition if slurm else None,
            # A work pool takes whole GPUs per job (the config refuses a share there).
            gpus=0 if config.gpus == 0 else math.ceil(config.gpus_per_job),
            time_limit=slurm.time_limit if slurm else None,
        )


class HostProbe:
    """The real probe: nvidia-smi, the PATH, `docker image inspect`, and the registered platform checks."""

    def __init__(
        self,
        environ: Mapping[str, str] | None = None,
        *,
        timeout_s: float = _PROBE_TIMEOUT_S,
        config: PipelineConfig | None = None,
    ) -> None:
        """`config` tells a platform check what the run's jobs will need (Kubernetes: namespace, volume, Secrets)."""
        self.environ = os.environ if environ is None else environ
        self.timeout_s = timeout_s
        self.config = config

    def gpus(self) -> list[GpuInfo]:
        """The GPUs jobs may use: nvidia-smi's list, narrowed by CUDA_VISIBLE_DEVICES when it is set."""
        return [entry.gpu for entry in detect_gpus(self.environ, timeout_s=self.timeout_s)]

    def command_available(self, name: str) -> bool:
        """Whether `name` is beside this Python or on PATH (for the reference runtime: and torch is there)."""
        beside = Path(sys.executable).parent / name
        found = (beside.is_file() and os.access(beside, os.X_OK)) or self.which(name) is not None
        module = _COMMAND_MODULES.get(name)
        return found and (module is None or importlib.util.find_spec(module) is not None)

    def image_present(self, image: str) -> bool | None:
        """True/False from `docker image inspect`; None when docker is missing or its daemon is silent."""
        docker = self.which("docker")
        if docker is None:
            return None
        done = self.run([docker, "image", "inspect", "--format", "{{.Id}}", image])
        if done is None:
            return None
        if done.returncode == 0:
            return True
        return False if "no such image" in done.stderr.lower() else None

    def platform_reachable(self, platform: str) -> Reachability:
        """Whether jobs can be submitted to `platform` from here, with what was seen."""
        check = _PLATFORM_CHECKS.get(platform)
        if check is None:
            return False, f"no reachability check exists for platform {platform!r}"
        return check(self)

    def host_name(self) -> str:
        return socket.gethostname()

    def bucket_reachable(self, block_name: str) -> Reachability:
        """A HEAD on the publish bucket through its S3Bucket block: read-only, writes nothing."""
        from aoi_pipeline.pipeline.publish import probe_bucket

        return probe_bucket(block_name)

    def answers(self, argv: list[str], shown: str) -> Reachability:
        """Run a read-only command; reachable when it exits 0, `shown` formatted with its output's words."""
        program = self.which(argv[0])
        if program is None:
            return False, f"{argv[0]} is not on PATH"
        done = self.run([program, *argv[1:]])
        if done is None:
            return False, f"`{' '.join(argv)}` did not answer within {self.timeout_s:g} s"
        if done.returncode != 0:
            reason = (done.stderr.strip() or done.stdout.strip() or "no output").splitlines()[0]
            return False, f"`{' '.join(argv)}` failed (exit code {done.returncode}): {reason}"
        return True, shown.format(", ".join(done.stdout.split()) or "(none)")

    def which(self, name: str) -> str | None:
        return shutil.which(name, path=self.environ.get("PATH"))

    def run(self, argv: list[str]) -> subprocess.CompletedProcess[str] | None:
        """The finished command, or None when it could not start or did not answer in time."""
        try:
            return subprocess.run(
                argv,
                capture_output=True,
                text=True,
                timeout=self.timeout_s,
                check=False,
                stdin=subprocess.DEVNULL,
            )
        except (OSError, subprocess.SubprocessError):
            return None


@platform_check("local")
def _local(host: HostProbe) -> Reachability:
    return True, f"this machine ({host.host_name()})"


@platform_check("docker")
def _docker(host: HostProbe) -> Reachability:
    return host.answers(["docker", "info", "--format", "{{.ServerVersion}}"], "Docker server {}")


@platform_check("kubernetes")
def _kubernetes(host: HostProbe) -> Reachability:
    """Read-only: the namespace, the workspace PVC (bound), GPU nodes and the Secrets the run's Jobs name;
    whatever the API server does not answer or show is UNKNOWN (None), never OK."""
    from aoi_pipeline.workers.kubernetes import load_base_job_template
    from aoi_pipeline.workers.kubernetes_cluster import ClusterTargets, probe_cluster_now, summarize

    if host.config is None:
        return None, "the cluster was not asked: the probe was given no pipeline config"
    targets = ClusterTargets.from_config(host.config, load_base_job_template())
    return summarize(probe_cluster_now(targets, host.environ, timeout_s=host.timeout_s))


@platform_check("slurm")
def _slurm(host: HostProbe) -> Reachability:
    """sinfo answers (here, or over ssh on SLURM_HOSTNAME as the worker would submit), the job's partition (else
    SLURM_PARTITION, else the default) exists and is up, offers the GPUs a job asks for, and the job's time limit
    (else SLURM_TIME_HOURS, as the reference's Slurm runtime check reads it) is within the partition's maximum."""
    from aoi_pipeline.workers.slurm.cluster import SINFO_ARGS, check_cluster, parse_sinfo

    shape = SlurmJobShape.of(host.config)
    time_limit = shape.time_limit
    hours = host.environ.get("SLURM_TIME_HOURS")
    if time_limit is None and hours:
        try:
            time_limit = str(max(1, round(float(hours) * 60)))
        except ValueError:
            return False, f"SLURM_TIME_HOURS={hours!r} is not a number of hours"
    if host.environ.get("SLURM_HOSTNAME"):
        ok, text = _sinfo_over_ssh(host)
        if not ok:
            return ok, text
    else:
        ok, seen = host.answers(list(SINFO_ARGS), "{}")
        if not ok:
            return ok, seen
        done = host.run([host.which("sinfo") or "sinfo", *SINFO_ARGS[1:]])
        text = done.stdout if done is not None else ""
    partition = shape.partition or host.environ.get("SLURM_PARTITION") or None
    return check_cluster(parse_sinfo(text), partition=partition, gpus=shape.gpus, time_limit=time_limit)


def _sinfo_over_ssh(host: HostProbe) -> Reachability:
    """(True, sinfo's output) from the first login node of SLURM_HOSTNAME that answers, else (False, why)."""
    from aoi_pipeline.workers.slurm.cluster import SINFO_ARGS
    from aoi_pipeline.workers.slurm.login import login_from_environment
    from aoi_pipeline.workers.slurm.shell import open_shell

    try:
        with open_shell(login_from_environment(host.environ), probe_timeout=host.timeout_s) as shell:
            done = shell.run(list(SINFO_ARGS), timeout=host.timeout_s)
    except (ConnectionError, OSError, subprocess.SubprocessError) as error:
        return False, str(error)
    if done.returncode != 0:
        return False, f"sinfo on {shell.where} failed (exit code {done.returncode}): {done.stderr.strip()[:200]}"
    return True, done.stdout


@dataclass
class StaticProbe:
    """A probe answering from fixed data, in memory; `asked` records every question in order."""

    gpu_list: Iterable[GpuInfo] = ()
    commands: Iterable[str] = ("aoi-changenet", "visual_changenet")
    present_images: Iterable[str] = ()
    reachability: Reachability = (True, "answers")
    bucket: Reachability = (True, "the bucket answers")
    name: str = "static-host"
    asked: list[tuple[str, str]] = field(default_factory=list)

    def gpus(self) -> list[GpuInfo]:
        self.asked.append(("gpus", ""))
        return list(self.gpu_list)

    def command_available(self, name: str) -> bool:
        self.asked.append(("command", name))
        return name in set(self.commands)

    def image_present(self, image: str) -> bool | None:
        self.asked.append(("image", image))
        return image in set(self.present_images)

    def platform_reachable(self, platform: str) -> Reachability:
        self.asked.append(("platform", platform))
        return self.reachability

    def host_name(self) -> str:
        return self.name

    def bucket_reachable(self, block_name: str) -> Reachability:
        self.asked.append(("bucket", block_name))
        return self.bucket

    def questions(self, kind: str) -> list[str]:
        """What was asked of one kind ("command", "image", "platform", "bucket"), in order."""
        return [subject for asked_kind, subject in self.asked if asked_kind == kind]


@dataclass(frozen=True)
class ProbeAnswers:
    """What the probe said, as plain data for the checks and the plan; None where it was not asked."""

    host_name: str
    gpus: tuple[GpuInfo, ...] | None  # None: on a remote platform's nodes, not probed from here
    runtime_found: bool | None  # None: the runtime runs inside images on a remote platform
    reachable: Reachability | None  # None: platform local
    images: Mapping[str, bool | None]  # present/missing/unknown per image; docker only
    bucket: Reachability | None = None  # None: the run publishes nothing


def ask_probe(
    probe: PlatformProbe,
    *,
    platform: str,
    runtime_command: str,
    images: Iterable[str],
    bucket_block: str | None = None,
) -> ProbeAnswers:
    """Ask exactly what a plan on `platform` needs: local GPUs, the runtime or the platform, docker images,
    and the publish bucket when the run publishes."""
    gpus = None if platform in REMOTE_GPU_PLATFORMS else tuple(probe.gpus())
    local = platform == "local"
    runtime_found = probe.command_available(runtime_command) if local else None
    reachable = None if local else probe.platform_reachable(platform)
    present = {uri: probe.image_present(uri) for uri in dict.fromkeys(images)} if platform == "docker" else {}
    bucket = None if bucket_block is None else probe.bucket_reachable(bucket_block)
    return ProbeAnswers(probe.host_name(), gpus, runtime_found, reachable, present, bucket)
