"""What the AutoML sweep benchmarks share: a Phase 1 run context on a DeepPCB copy, run without Prefect.

The trials are the pipeline's own (`pipeline.trials.run_trial`: a training job and a validation inference
through the local launcher, with its GPU slots and shares), so the benchmarks run on a bare GPU machine with
the package on PYTHONPATH. The reference runtime is started as `python -c ...` when `aoi-changenet` is not
installed there.
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

from aoi_pipeline.config import PipelineConfig, config_from_mapping
from aoi_pipeline.jobs.job import JobResult, TaoJob
from aoi_pipeline.jobs.local import LocalLauncher
from aoi_pipeline.pipeline.context import RunContext
from aoi_pipeline.pipeline.layout import RunLayout

_RUNTIME_MAIN = "import sys; from aoi_pipeline.changenet.cli import main; sys.exit(main())"


def runtime_command(job: TaoJob) -> list[str]:
    """`aoi-changenet <action>` when installed, else the same entry point through this interpreter."""
    installed = Path(sys.executable).with_name("aoi-changenet")
    if installed.is_file():
        return [str(installed), job.action]
    if found := shutil.which("aoi-changenet"):
        return [found, job.action]
    return [sys.executable, "-c", _RUNTIME_MAIN, job.action]


class QuietRunner:
    """The local launcher, its jobs' output to job.log only; it can stop one job (a pruned trial's)."""

    def __init__(self) -> None:
        self.launcher = LocalLauncher(command_resolver=runtime_command)

    def run(self, job: TaoJob) -> JobResult:
        result = self.launcher.run(job, log=lambda line: None)
        print(f"  {job.name}: {result.status} in {result.duration_s:.1f} s", flush=True)
        return result

    def stop(self, results_dir: Path, reason: str) -> bool:
        return self.launcher.stop(results_dir, reason)


def phase1_config(workspace: Path, results: Path, *, share: float, phase1: dict[str, Any], size: int) -> PipelineConfig:
    return config_from_mapping(
        {
            "workspace": str(workspace),
            "results_root": str(results),
            "gpus": "auto",
            "gpus_per_job": share,
            "dataset": {"image_ext": ".png"},
            "spec_overrides": [
                f"dataset.classify.image_width={size}",
                f"dataset.classify.image_height={size}",
                "dataset.classify.fpratio_sampling=0.5",
                "model.classify.difference_module=euclidean",
            ],
            "phase1": phase1,
            "phase3": {"enabled": False},
            "deft": {"max_iterations": 0},
        }
    )


def phase1_context(config: PipelineConfig, run_name: str) -> RunContext:
    layout = RunLayout(config.resolved_results_root / run_name)
    layout.phase_dir("phase1").mkdir(parents=True, exist_ok=True)
    return RunContext.from_config(config, layout, QuietRunner())


class GpuSampler:
    """nvidia-smi's utilisation of GPU 0 every `period_s` while it runs: (mean %, share of busy samples)."""

    def __init__(self, period_s: float = 0.2) -> None:
        self.period_s, self.samples = period_s, []  # type: ignore[var-annotated]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def __enter__(self) -> GpuSampler:
        if shutil.which("nvidia-smi"):
            self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join()

    def _run(self) -> None:
        query = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-i", "0"]
        while not self._stop.is_set():
            started = time.monotonic()
            out = subprocess.run(query, capture_output=True, text=True, check=False).stdout.strip()
            if out.isdigit():
                self.samples.append(int(out))
            self._stop.wait(max(0.0, self.period_s - (time.monotonic() - started)))

    def summary(self) -> dict[str, float | None]:
        if not self.samples:
            return {"gpu_util_mean_pct": None, "gpu_busy_share_pct": None}
        mean = sum(self.samples) / len(self.samples)
        busy = 100.0 * sum(1 for s in self.samples if s > 0) / len(self.samples)
        return {"gpu_util_mean_pct": round(mean, 1), "gpu_busy_share_pct": round(busy, 1)}
