"""Training and inference throughput of the reference runtime's real training step, on synthetic pairs.

No disk and no CSV: a few thousand random blocky (golden, test) pairs are made directly on the device as the
uint8 cache the trainer uses, then the trainer's own `TrainStep` (device augmentation from the baseline spec,
bf16 autocast on a GPU, AdamW) runs for `--seconds`. Reported: training and inference pairs/s, peak memory
(CPU RSS, `torch.cuda.max_memory_allocated`) and, on a GPU, how busy it was: the mean of `nvidia-smi`
utilisation samples taken during the timed run, and the share of wall time covered by GPU kernels in a short
profiled window (the stricter number: utilisation counts a sample busy if any kernel ran in it).

    python benchmarks/trainer_throughput.py --size 160 --batch 256 --seconds 20 --device auto
    python benchmarks/trainer_throughput.py --size 64 --batch 32 --seconds 5 --device cpu
"""

from __future__ import annotations

import argparse
import json
import resource
import shutil
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import torch

from aoi_pipeline.changenet.data import Augmentation, Normaliser, to_unit
from aoi_pipeline.changenet.infer import autocast_dtype, configure_threads, prepare_input, select_device
from aoi_pipeline.changenet.model import ChangeNetClassifier, ModelConfig
from aoi_pipeline.changenet.train import TrainStep
from aoi_pipeline.core.spec.baseline import baseline_spec


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=160)
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--pairs", type=int, default=4096, help="synthetic pairs held in the device cache")
    parser.add_argument("--difference-module", default="learnable", choices=["learnable", "euclidean"])
    parser.add_argument("--backbone", default="small", choices=["small", "resnet"], help="reference.backbone")
    parser.add_argument("--compile", action="store_true", help="torch.compile the network")
    parser.add_argument("--compile-mode", default=None, help="torch.compile mode, e.g. reduce-overhead")
    parser.add_argument("--json", type=Path, default=None)
    return parser.parse_args(argv)


def synthetic_pairs(count: int, size: int, device: torch.device, generator: torch.Generator) -> torch.Tensor:
    """uint8 [count, 2, 1, size, size]: blocky goldens, tests shifted by a pixel with a few flipped blocks."""
    cells = max(2, size // 8)
    blocks = torch.rand(count, 1, cells, cells, generator=generator, device=device) < 0.45
    golden = torch.nn.functional.interpolate(blocks.float(), size=(size, size), mode="nearest")
    test = torch.roll(golden, shifts=(1, -1), dims=(2, 3))
    flips = torch.rand(count, 1, cells, cells, generator=generator, device=device) < 0.02
    test = (test - torch.nn.functional.interpolate(flips.float(), size=(size, size), mode="nearest")).abs()
    return (torch.stack([test, golden], dim=1) * 255).to(torch.uint8)


class UtilisationSampler(threading.Thread):
    """Samples `nvidia-smi` GPU utilisation every 100 ms until stopped."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.samples: list[float] = []
        self._stop = threading.Event()
        self._process: subprocess.Popen[str] | None = None

    def run(self) -> None:
        command = ["nvidia-smi", "--query-gpu=utilization.gpu", "--format=csv,noheader,nounits", "-lms", "100"]
        self._process = subprocess.Popen(command, stdout=subprocess.PIPE, text=True)
        assert self._process.stdout is not None
        for line in self._process.stdout:
            if self._stop.is_set():
                break
            value = line.strip().split(",")[0]
            if value.replace(".", "", 1).isdigit():
                self.samples.append(float(value))

    def stop(self) -> None:
        self._stop.set()
        if self._process is not None:
            self._process.terminate()


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def kernel_busy_share(step: Any, device: torch.device, steps: int = 20) -> float:
    """Share of wall time covered by GPU kernels over `steps` profiled training steps (overlaps merged)."""
    from torch.profiler import ProfilerActivity, profile

    synchronize(device)
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        started = time.perf_counter()
        for _ in range(steps):
            step()
        synchronize(device)
        wall_us = (time.perf_counter() - started) * 1e6
    intervals = sorted(
        (event.time_range.start, event.time_range.end)
        for event in prof.events()
        if event.device_type == torch.autograd.DeviceType.CUDA
    )
    busy, current_start, current_end = 0.0, None, None
    for start, end in intervals:
        if current_end is None or start > current_end:
            if current_end is not None:
                busy += current_end - current_start
            current_start, current_end = start, end
        else:
            current_end = max(current_end, end)
    if current_end is not None:
        busy += current_end - current_start
    return min(1.0, busy / wall_us)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    device = select_device(args.device)
    threads = configure_threads()
    torch.backends.cudnn.benchmark = True
    generator = torch.Generator(device=device).manual_seed(0)
    pairs = synthetic_pairs(args.pairs, args.size, device, generator)
    labels = (torch.rand(args.pairs, generator=generator, device=device) < 0.25).long()
    spec = baseline_spec()
    augmentation = Augmentation.from_spec(spec["dataset"]["classify"]["augmentation_config"], shift_fraction=0.03)
    model = ChangeNetClassifier(
        ModelConfig(in_channels=1, difference_module=args.difference_module, embed_dec=30, backbone=args.backbone)
    )
    model = model.to(device)
    if device.type == "cuda":
        model = model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.AdamW(model.parameters(), lr=1e-3, **({"fused": True} if device.type == "cuda" else {}))
    amp = autocast_dtype(None, device)
    normaliser = Normaliser([0.449], [0.226], device)
    train_step = TrainStep(
        model,
        optimizer,
        augmentation=augmentation,
        normaliser=normaliser,
        class_weights=torch.tensor([1.0, 10.0], device=device),
        amp=amp,
        color=False,
        compiled=(args.compile_mode or True) if args.compile else False,
    )
    batch = min(args.batch, args.pairs)

    def one_step() -> torch.Tensor:
        rows = torch.randint(args.pairs, (batch,), generator=generator, device=device)
        return train_step(pairs[rows], labels[rows], generator)

    warm_started = time.perf_counter()
    for _ in range(5 if not args.compile else 15):
        one_step()
    synchronize(device)
    warmup_seconds = time.perf_counter() - warm_started
    if device.type == "cuda":
        torch.cuda.reset_peak_memory_stats(device)
    sampler = UtilisationSampler() if device.type == "cuda" and shutil.which("nvidia-smi") else None
    if sampler:
        sampler.start()
        time.sleep(0.3)
    steps, started = 0, time.perf_counter()
    while time.perf_counter() - started < args.seconds:
        # No synchronisation inside the loop: the host runs at most a bounded queue ahead of the GPU.
        for _ in range(10):
            one_step()
        steps += 10
    synchronize(device)
    train_seconds = time.perf_counter() - started
    if sampler:
        sampler.stop()
    train_peak = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    busy = None
    if device.type == "cuda":
        try:
            busy = kernel_busy_share(one_step, device)
        except Exception as error:  # the profiler needs CUPTI, which some images lack
            print(f"kernel busy share not measured: {error}", file=sys.stderr)

    model.eval()
    infer_batch = max(batch, 512) if device.type == "cuda" else batch
    infer_pairs, started = 0, time.perf_counter()
    with torch.no_grad():
        while time.perf_counter() - started < args.seconds / 2:
            rows = torch.randint(args.pairs, (infer_batch,), generator=generator, device=device)
            test, golden = prepare_input(to_unit(pairs[rows]), normaliser)
            with torch.autocast(device_type=device.type, dtype=amp or torch.float32, enabled=amp is not None):
                head_output, _ = model(test, golden)
            model.scores(head_output)
            infer_pairs += infer_batch
        synchronize(device)
    infer_seconds = time.perf_counter() - started

    result = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else f"cpu ({threads} threads)",
        "torch": torch.__version__,
        "size": args.size,
        "batch": batch,
        "difference_module": args.difference_module,
        "compiled": (args.compile_mode or "default") if args.compile else False,
        "amp": str(amp),
        "warmup_seconds": warmup_seconds,
        "train_pairs_per_s": steps * batch / train_seconds,
        "infer_pairs_per_s": infer_pairs / infer_seconds,
        "train_peak_gpu_mib": train_peak / 2**20 if train_peak is not None else None,
        "peak_gpu_mib": torch.cuda.max_memory_allocated(device) / 2**20 if device.type == "cuda" else None,
        "peak_rss_mib": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        "nvidia_smi_util_mean_pct": sum(sampler.samples) / len(sampler.samples)
        if sampler and sampler.samples
        else None,
        "kernel_busy_pct": 100.0 * busy if busy is not None else None,
    }
    text = json.dumps(result, indent=2)
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(text + "\n")
    print(text)
    print(
        f"{result['device']} {args.size}px batch {batch}: train {result['train_pairs_per_s']:.0f} pairs/s, "
        f"inference {result['infer_pairs_per_s']:.0f} pairs/s"
        + (f", GPU busy {result['kernel_busy_pct']:.0f}% (kernels), " if busy is not None else "")
        + (f"{result['nvidia_smi_util_mean_pct']:.0f}% (nvidia-smi)" if result["nvidia_smi_util_mean_pct"] else "")
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
