"""Catalogue cases: bad run state files, workspace locks and pipeline configs. Importing the module registers them."""

from __future__ import annotations

import json

from catalogue import (
    Scene,
    case,
    hold_lock,
    load_pipeline_config,
    start_run,
)

from aoi_pipeline.core.lock import WorkspaceLock
from aoi_pipeline.core.state import StageCommit, commit_stage, read_state
from aoi_pipeline.errors import (
    ConfigError,
    StateError,
    WorkspaceLockedError,
)

# -------------------------------------------------------------------------------------------- run state


@case(
    "truncated state file",
    lambda scene: read_state(scene.run_dir),
    StateError,
    "deft_state.json",
    "truncated or invalid JSON at line",
    "restore deft_state.json from a backup",
)
def _(scene: Scene) -> None:
    path = start_run(scene)
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


@case(
    "empty state file",
    lambda scene: read_state(scene.run_dir),
    StateError,
    "deft_state.json",
    "the file is empty",
    "start a fresh run",
)
def _(scene: Scene) -> None:
    start_run(scene).write_bytes(b"")


@case(
    "state with a wrong version",
    lambda scene: read_state(scene.run_dir),
    StateError,
    "deft_state.json: version",
    "version 3 is not supported",
    "start a fresh run",
)
def _(scene: Scene) -> None:
    path = start_run(scene)
    state = json.loads(path.read_text(encoding="utf-8"))
    state["version"] = 3
    path.write_text(json.dumps(state, indent=2), encoding="utf-8")


@case(
    "out-of-order state commit",
    lambda scene: commit_stage(
        scene.run_dir, StageCommit("baseline", "evaluate", "ok", "evaluated the baseline", 12.0)
    ),
    StateError,
    "deft_state.json",
    "commit baseline/evaluate",
    "the run state expects baseline/train next",
    "commit baseline/train first",
)
def _(scene: Scene) -> None:
    start_run(scene)


@case(
    "second init of an existing run state",
    lambda scene: start_run(scene),
    StateError,
    "deft_state.json",
    "a run state already exists here",
    "resume that run",
)
def _(scene: Scene) -> None:
    start_run(scene)


# ------------------------------------------------------------------------------------------ the lock


@case(
    "second concurrent run",
    lambda scene: WorkspaceLock(scene.ws.root, owner="second run").acquire(),
    WorkspaceLockedError,
    ".aoi-pipeline.lock",
    "in use by pid $pid",
    "owner 'nightly run'",
    "kill $pid",
)
def _(scene: Scene) -> None:
    hold_lock(scene)


@case(
    "lock held by a run on another host",
    lambda scene: WorkspaceLock(scene.ws.root).acquire(),
    WorkspaceLockedError,
    ".aoi-pipeline.lock",
    "in use by pid 4242 on host 'inspection-07'",
    "delete $lock by hand",
)
def _(scene: Scene) -> None:
    lock = scene.ws.root / ".aoi-pipeline.lock"
    holder = {"pid": 4242, "hostname": "inspection-07", "started_at": "2026-03-01T08:00:00+00:00", "owner": ""}
    lock.write_text(json.dumps(holder), encoding="utf-8")
    scene.values["lock"] = str(lock)


# ------------------------------------------------------------------------------------ pipeline config


@case(
    "pipeline config with an unknown key",
    load_pipeline_config,
    ConfigError,
    "pipeline.yaml key phase1.num_epoch",
    "(got 5)",
    "remove the key or correct its spelling",
)
def _(scene: Scene) -> None:
    (scene.root / "pipeline.yaml").write_text("workspace: ws\nphase1:\n  num_epoch: 5\n", encoding="utf-8")


@case(
    "pipeline config with a wrong type",
    load_pipeline_config,
    ConfigError,
    "pipeline.yaml key gpus_per_job",
    "'two'",
    "correct the value",
)
def _(scene: Scene) -> None:
    (scene.root / "pipeline.yaml").write_text("workspace: ws\ngpus_per_job: two\n", encoding="utf-8")


@case(
    "pipeline config that is not YAML",
    load_pipeline_config,
    ConfigError,
    "pipeline.yaml",
    "is not valid YAML",
    "fix the YAML syntax",
)
def _(scene: Scene) -> None:
    (scene.root / "pipeline.yaml").write_text("workspace: [ws\n", encoding="utf-8")
