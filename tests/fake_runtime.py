"""A stand-in TAO runtime for flow tests: writes what each action writes, in milliseconds.

`python fake_runtime.py ACTION -e SPEC [k=v ...]`. train writes status.json lines (0-based epochs, as TAO)
and one checkpoint per epoch; inference writes inference.csv with the input rows plus a siamese_score that
separates PASS from defects with a margin set by `train.optim.lr` (so trials differ); sdg runs the real
procedural SDG; embed writes unit vectors of the downsampled test image, so similar images are near.
Every call is appended to the file named by FAKE_RUNTIME_CALLS, so tests can assert what was (or was not)
launched; FAKE_RUNTIME_FAIL=<action> makes that action fail like a program error, FAKE_RUNTIME_SLEEP=<action>:<s>
makes that action take that long (to catch a job while it runs), FAKE_RUNTIME_HANG=<part of a spec path> makes
that one job hang after writing its pid to FAKE_RUNTIME_HANG_MARK; FAKE_RUNTIME_EPOCH_S=<s> makes every training
epoch take that long, flushing its status.json line, with a validation FAR that falls as `train.optim.lr`
rises. Like a careless runtime, it prints the NGC_API_KEY it was given, so tests can check that the launcher
redacts it.
"""

from __future__ import annotations

import csv
import hashlib
import json
import os
import sys
import time
from pathlib import Path

import yaml


def _record(action: str, spec_path: str) -> None:
    calls = os.environ.get("FAKE_RUNTIME_CALLS")
    if calls:
        with open(calls, "a", encoding="utf-8") as handle:
            handle.write(json.dumps({"action": action, "spec": spec_path}) + "\n")


def _train(spec: dict) -> None:
    train = spec["train"]
    out = Path(train["results_dir"])
    out.mkdir(parents=True, exist_ok=True)
    epochs = int(train["num_epochs"])
    epoch_s = float(os.environ.get("FAKE_RUNTIME_EPOCH_S", "0"))
    with (out / "status.json").open("a", encoding="utf-8") as status:
        for epoch in range(epochs):
            time.sleep(epoch_s)
            (out / f"model_epoch_{epoch:03d}_step_{(epoch + 1) * 10:05d}.pth").write_bytes(b"weights %d" % epoch)
            kpi = {"val_loss": 1.0 / (epoch + 1), "val_acc": 0.5, "val_far": _val_far(spec) if epoch_s else 50.0}
            status.write(json.dumps({"status": "RUNNING", "epoch": epoch, "max_epoch": epochs - 1, "kpi": kpi}) + "\n")
            status.flush()
        status.write(json.dumps({"status": "SUCCESS", "message": "Training finished"}) + "\n")


def _val_far(spec: dict) -> float:
    """With FAKE_RUNTIME_EPOCH_S set: a validation FAR that falls as the learning rate rises (lr 3e-3 -> 0 %)."""
    return round(max(0.0, 100.0 - float(spec["train"]["optim"]["lr"]) * 100 / 3e-3), 6)


def _score(row: dict, margin: float) -> float:
    noise = int(hashlib.sha256(row["object_name"].encode() + row["input_path"].encode()).hexdigest()[:6], 16)
    jitter = (noise % 1000) / 1000.0
    if row["label"] == "PASS":
        return 0.6 * jitter
    return min(1.0, 0.5 - margin + jitter * 0.5)


def _inference(spec: dict) -> None:
    block = spec["dataset"]["classify"]["infer_dataset"]
    out = Path(spec["inference"]["results_dir"])
    out.mkdir(parents=True, exist_ok=True)
    margin = min(0.3, float(spec["train"]["optim"]["lr"]) * 100)
    with open(block["csv_path"], newline="", encoding="utf-8") as source:
        rows = list(csv.DictReader(source))
    columns = [*rows[0].keys(), "siamese_score"]
    with (out / "inference.csv").open("w", newline="", encoding="utf-8") as target:
        writer = csv.DictWriter(target, fieldnames=columns)
        writer.writeheader()
        for row in rows:
            writer.writerow({**row, "siamese_score": f"{_score(row, margin):.6f}"})


def _sdg(spec: dict, spec_path: str) -> None:
    from aoi_pipeline.changenet.sdg import run_sdg

    run_sdg(spec, spec_path=Path(spec_path))


def _embed(spec: dict) -> None:
    import numpy as np
    from PIL import Image

    block = spec["embed"]
    light = next(iter(spec["dataset"]["classify"]["input_map"]))
    ext = spec["dataset"]["classify"]["image_ext"]
    out = Path(block["results_dir"])
    out.mkdir(parents=True, exist_ok=True)
    with open(block["csv_path"], newline="", encoding="utf-8") as source:
        rows = list(csv.DictReader(source))
    vectors = []
    for row in rows:
        path = Path(block["images_dir"]) / row["input_path"] / f"{row['object_name']}_{light}{ext}"
        pixels = np.asarray(Image.open(path).convert("L").resize((8, 8)), dtype=np.float32).ravel()
        pixels = pixels - pixels.mean() + 1e-3
        vectors.append(pixels / np.linalg.norm(pixels))
    np.save(out / "embeddings.npy", np.stack(vectors).astype(np.float32))
    margin = min(0.3, float(spec["train"]["optim"]["lr"]) * 100)
    with (out / "embeddings_index.csv").open("w", newline="", encoding="utf-8") as target:
        writer = csv.DictWriter(target, fieldnames=["row_index", *rows[0].keys(), "siamese_score"])
        writer.writeheader()
        for index, row in enumerate(rows):
            writer.writerow({"row_index": index, **row, "siamese_score": f"{_score(row, margin):.6f}"})


def _hang_if_asked(spec_path: str) -> None:
    """FAKE_RUNTIME_HANG=<part of the spec path>: that job writes its pid to FAKE_RUNTIME_HANG_MARK and hangs,
    so a test can kill the run in the middle of it."""
    part, mark = os.environ.get("FAKE_RUNTIME_HANG"), os.environ.get("FAKE_RUNTIME_HANG_MARK")
    if part and mark and part in spec_path:
        Path(mark).write_text(str(os.getpid()), encoding="utf-8")
        time.sleep(600)


def main(argv: list[str]) -> int:
    action, spec_path = argv[0], argv[2]
    _record(action, spec_path)
    if os.environ.get("NGC_API_KEY"):
        print(f"using NGC key {os.environ['NGC_API_KEY']}")
    _hang_if_asked(spec_path)
    slow_action, _, seconds = os.environ.get("FAKE_RUNTIME_SLEEP", "").partition(":")
    if slow_action == action:
        time.sleep(float(seconds))
    spec = yaml.safe_load(Path(spec_path).read_text(encoding="utf-8"))
    if os.environ.get("FAKE_RUNTIME_FAIL") == action:
        print("Traceback (most recent call last):\nValueError: planted failure", file=sys.stderr)
        return 1
    if action == "sdg":
        _sdg(spec, spec_path)
    else:
        {"train": _train, "inference": _inference, "embed": _embed}[action](spec)
    print("Execution status: PASS")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
