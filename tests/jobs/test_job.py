"""The TAO job contract: commands, records without secrets, validation of what a job may hold."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from aoi_pipeline.errors import ConfigError
from aoi_pipeline.jobs import Mount, TaoJob


def make_job(tmp_path: Path, **changes) -> TaoJob:
    fields = {
        "name": "phase1-trial-003-train",
        "action": "train",
        "image": "nvcr.io/nvidia/tao/tao-toolkit:6.0.0-pyt",
        "spec": {"train": {"num_epochs": 2}, "model": {"classify": {"difference_module": "euclidean"}}},
        "results_dir": tmp_path / "trial-003" / "train",
    }
    fields.update(changes)
    return TaoJob(**fields)


def test_reference_runtime_command_is_aoi_changenet_with_spec_then_overrides(tmp_path):
    job = make_job(tmp_path, overrides=("train.num_epochs=3", "train.classify.cls_weight[1]=4.0"))

    assert job.entrypoint() == ["aoi-changenet", "train"]
    assert job.command("/results/spec.yaml") == [
        "aoi-changenet",
        "train",
        "-e",
        "/results/spec.yaml",
        "train.num_epochs=3",
        "train.classify.cls_weight[1]=4.0",
    ]


def test_tao_runtime_command_is_visual_changenet(tmp_path):
    job = make_job(tmp_path, runtime="tao", action="inference")

    assert job.command("/specs/infer.yaml") == ["visual_changenet", "inference", "-e", "/specs/infer.yaml"]


def test_record_is_json_and_holds_env_names_but_never_their_values(tmp_path, monkeypatch):
    monkeypatch.setenv("NGC_API_KEY", "nvapi-supersecretvalue-1234567890")
    job = make_job(
        tmp_path,
        env_names=("NGC_API_KEY",),
        mounts=(Mount(tmp_path / "ws", "/data/workspace", read_only=True),),
        gpus=2,
        timeout_s=3600,
    )

    dumped = json.dumps(job.to_record())
    record = json.loads(dumped)

    assert "nvapi-supersecretvalue" not in dumped
    assert record["env_names"] == ["NGC_API_KEY"]
    assert record["mounts"] == [{"host": str(tmp_path / "ws"), "container": "/data/workspace", "read_only": True}]
    assert record["results_dir"] == str(tmp_path / "trial-003" / "train")
    assert record["spec"] == {
        "train": {"num_epochs": 2},
        "model": {"classify": {"difference_module": "euclidean"}},
    }
    assert (record["gpus"], record["timeout_s"], record["runtime"]) == (2, 3600, "reference")


def test_record_keeps_spec_key_order(tmp_path):
    spec = {"results_dir": "/r", "train": {}, "model": {}, "dataset": {}}

    assert list(make_job(tmp_path, spec=spec).to_record()["spec"]) == [
        "results_dir",
        "train",
        "model",
        "dataset",
    ]


def test_job_keeps_its_own_copy_of_the_spec(tmp_path):
    spec = {"train": {"num_epochs": 2}}
    job = make_job(tmp_path, spec=spec)

    spec["train"]["num_epochs"] = 99

    assert job.spec["train"]["num_epochs"] == 2


def test_lists_are_accepted_and_stored_as_tuples(tmp_path):
    job = make_job(tmp_path, overrides=["a.b=1"], env_names=["HF_TOKEN"], results_dir=str(tmp_path / "x"))

    assert job.overrides == ("a.b=1",)
    assert job.env_names == ("HF_TOKEN",)
    assert job.results_dir == tmp_path / "x"


def test_every_problem_is_reported_at_once(tmp_path):
    with pytest.raises(ConfigError) as caught:
        make_job(
            tmp_path,
            name="bad name!",
            action="quantize",
            runtime="docker",
            gpus=-1,
            timeout_s=0,
            overrides=("no_equals_sign",),
            mounts=(Mount(tmp_path, "relative/path"),),
        )

    wheres = [problem.where for problem in caught.value.problems]
    assert wheres == [
        "job 'bad name!'.name",
        "job 'bad name!'.action",
        "job 'bad name!'.runtime",
        "job 'bad name!'.gpus",
        "job 'bad name!'.timeout_s",
        "job 'bad name!'.overrides[0]",
        "job 'bad name!'.mounts[0].container",
    ]
    assert "quantize" in str(caught.value)


def test_an_env_entry_with_a_value_is_refused_without_echoing_the_value(tmp_path):
    with pytest.raises(ConfigError) as caught:
        make_job(tmp_path, env_names=("NGC_API_KEY=nvapi-abcdefghijklmnop",))

    message = str(caught.value)
    assert "NGC_API_KEY" in message
    assert "nvapi-abcdefghijklmnop" not in message
    assert "names only" in message
