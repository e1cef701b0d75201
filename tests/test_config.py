"""The pipeline configuration file: strict keys, typed values, paths relative to the file, usable defaults."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from aoi_pipeline.config import config_from_mapping, load_config
from aoi_pipeline.core.metric_target import parse_target
from aoi_pipeline.errors import ConfigError


def write_config(path: Path, text: str) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text, encoding="utf-8")
    return path


def refusal(path: Path) -> ConfigError:
    with pytest.raises(ConfigError) as caught:
        load_config(path)
    return caught.value


# ------------------------------------------------------------------------------------------------ defaults


def test_a_config_with_only_the_workspace_runs_locally_with_small_valid_defaults(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "pipeline.yaml", "workspace: ws\n"))

    assert config.workspace == tmp_path / "ws"
    # "runs end to end on a laptop": no container platform, the reference runtime, results in the workspace.
    assert (config.platform, config.runtime) == ("local", "reference")
    assert config.results_root is None and config.resolved_results_root == tmp_path / "ws" / "results"
    assert parse_target(config.kpi_target).name == "far_pct"
    assert config.dataset.lights and config.dataset.image_ext.startswith(".")
    assert config.spec_file is None and config.spec_overrides == ()
    for phase in (config.phase1, config.phase3):
        assert phase.batch_size >= 2 and phase.num_epochs >= 1 and phase.recommendations >= 1
    assert config.deft.max_iterations >= 1 and config.deft.num_epochs >= 1  # the loop runs at least once


def test_the_config_is_frozen(tmp_path: Path) -> None:
    config = load_config(write_config(tmp_path / "pipeline.yaml", "workspace: ws\n"))

    with pytest.raises(ValidationError):
        config.platform = "slurm"  # type: ignore[misc]


@pytest.mark.parametrize("written", ["png", ".png", " .png "])
def test_the_image_extension_is_normalised_to_a_leading_dot(tmp_path: Path, written: str) -> None:
    config = load_config(
        write_config(tmp_path / "pipeline.yaml", f"workspace: ws\ndataset:\n  image_ext: '{written}'\n")
    )

    assert config.dataset.image_ext == ".png"


def test_explicit_values_replace_the_defaults(tmp_path: Path) -> None:
    text = (
        "workspace: ws\nplatform: docker\nruntime: tao\ngpus: 4\nkpi_target: 'FAR <= 2% at Recall=99.5%'\n"
        "dataset:\n  lights: [SolderLight, UniformLight]\n  image_ext: .jpg\n"
        "phase1:\n  recommendations: 12\n  batch_size: 8\n"
        "deft:\n  max_iterations: 3\n"
        "spec_overrides: ['train.classify.cls_weight[1]=20']\n"
    )
    config = load_config(write_config(tmp_path / "pipeline.yaml", text))

    assert (config.platform, config.runtime, config.gpus) == ("docker", "tao", 4)
    assert config.kpi_target == "FAR <= 2% at Recall=99.5%"
    assert config.dataset.lights == ("SolderLight", "UniformLight")
    assert (config.phase1.recommendations, config.phase1.batch_size, config.deft.max_iterations) == (12, 8, 3)
    assert config.spec_overrides == ("train.classify.cls_weight[1]=20",)


# ------------------------------------------------------------------------------------------------- paths


def test_relative_paths_resolve_against_the_config_file_not_the_working_directory(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    path = write_config(
        tmp_path / "line7" / "conf" / "pipeline.yaml",
        "workspace: ../ws\nresults_root: runs\nspec_file: specs/base.yaml\n",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)

    config = load_config(Path("..") / "line7" / "conf" / "pipeline.yaml")

    conf_dir = path.parent.resolve()
    assert config.workspace == conf_dir.parent / "ws"
    assert config.results_root == conf_dir / "runs"
    assert config.spec_file == conf_dir / "specs" / "base.yaml"
    for resolved in (config.workspace, config.results_root, config.spec_file):
        assert resolved.is_absolute() and ".." not in resolved.parts


def test_absolute_paths_are_kept(tmp_path: Path) -> None:
    workspace = tmp_path / "data" / "ws"
    config = load_config(
        write_config(tmp_path / "conf" / "pipeline.yaml", f"workspace: {workspace}\nresults_root: /srv/runs\n")
    )

    assert config.workspace == workspace
    assert config.results_root == Path("/srv/runs")
    assert config.resolved_results_root == Path("/srv/runs")


def test_a_mapping_without_base_dir_keeps_relative_paths_as_written() -> None:
    config = config_from_mapping({"workspace": "ws", "spec_file": "specs/base.yaml"})

    assert config.workspace == Path("ws") and config.spec_file == Path("specs/base.yaml")


# -------------------------------------------------------------------------------------------- unknown keys


def test_unknown_keys_at_any_depth_are_all_reported_with_their_dotted_key(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "pipeline.yaml",
        "workspace: ws\nplatfrom: slurm\nphase1:\n  num_epoch: 5\nimages:\n  trian: my/image:1\n"
        "phase3:\n  search_space:\n    train.optim.lr: {type: float, low: 0.001, high: 0.1, step: 2}\n",
    )

    error = refusal(path)

    assert sorted(problem.where for problem in error.problems) == sorted(
        [
            f"{path} key platfrom",
            f"{path} key images.trian",
            f"{path} key phase1.num_epoch",
            f"{path} key phase3.search_space.train.optim.lr.step",
        ]
    )
    message = str(error)
    assert "'slurm'" in message and "'my/image:1'" in message
    assert all("remove the key or correct its spelling" in problem.fix for problem in error.problems)


@pytest.mark.parametrize(("platform", "state"), [("pbs", "is unknown"), ("dockre", "is unknown")])
def test_a_platform_that_does_not_exist_is_refused_naming_the_key_and_the_platforms(
    tmp_path: Path, platform: str, state: str
) -> None:
    path = write_config(tmp_path / "pipeline.yaml", f"workspace: ws\nplatform: {platform}\n")

    error = refusal(path)

    assert [problem.where for problem in error.problems] == [f"{path} key platform"]
    assert state in str(error) and "the platforms that exist are: local, docker, kubernetes, slurm" in str(error)


def test_a_missing_workspace_key_is_named(tmp_path: Path) -> None:
    path = write_config(tmp_path / "pipeline.yaml", "platform: local\n")

    error = refusal(path)

    assert [(p.where, p.fix) for p in error.problems] == [(f"{path} key workspace", "add the key")]


# ----------------------------------------------------------------------------------------------- types


@pytest.mark.parametrize(
    ("text", "key", "value"),
    [
        ("gpus_per_job: two", "gpus_per_job", "'two'"),
        ("gpus_per_job: 2.5", "gpus_per_job", "2.5"),
        ("platform: aws", "platform", "'aws'"),
        ("runtime: docker", "runtime", "'docker'"),
        ("job_timeout_minutes: 0", "job_timeout_minutes", "0"),
        ("credentials: secret", "credentials", "'secret'"),
        ("spec_overrides: ['train.num_epochs=5', 3]", "spec_overrides[1]", "3"),
        ("dataset: {lights: SolderLight}", "dataset.lights", "'SolderLight'"),
        ("phase1: {batch_size: 1}", "phase1.batch_size", "1"),
        ("phase3: {parallel: 0}", "phase3.parallel", "0"),
        ("deft: {min_similarity: 2}", "deft.min_similarity", "2"),
        ("deft: {max_iterations: 51}", "deft.max_iterations", "51"),
        ("workspace: [a, b]", "workspace", "['a', 'b']"),
        (
            "phase1: {search_space: {train.optim.lr: {type: float, low: 1, high: 0.1}}}",
            "phase1.search_space.train.optim.lr",
            "low < high",
        ),
        (
            "phase1: {search_space: {train.optim.lr: {type: float, low: 0, high: 0.1, log: true}}}",
            "phase1.search_space.train.optim.lr",
            "low > 0",
        ),
        (
            "phase1: {search_space: {model.backbone.type: {type: categorical}}}",
            "phase1.search_space.model.backbone.type",
            "choices",
        ),
    ],
)
def test_a_wrong_value_is_refused_naming_the_key_and_the_value(tmp_path: Path, text: str, key: str, value: str) -> None:
    body = text if text.startswith("workspace") else f"workspace: ws\n{text}"
    path = write_config(tmp_path / "pipeline.yaml", body + "\n")

    error = refusal(path)

    assert [problem.where for problem in error.problems] == [f"{path} key {key}"]
    assert value in error.problems[0].what
    assert error.problems[0].fix


def test_every_wrong_value_is_reported_in_one_error(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "pipeline.yaml", "workspace: ws\nplatform: aws\nphase1: {parallel: 0}\ndeft: {num_sdg: -1}\n"
    )

    error = refusal(path)

    assert {problem.where for problem in error.problems} == {
        f"{path} key platform",
        f"{path} key phase1.parallel",
        f"{path} key deft.num_sdg",
    }
    assert str(path) in str(error).splitlines()[0]


def test_a_wrong_gpus_value_is_reported_once_at_the_key_gpus(tmp_path: Path) -> None:
    path = write_config(tmp_path / "pipeline.yaml", "workspace: ws\ngpus: -1\n")

    error = refusal(path)

    assert [problem.where for problem in error.problems] == [f"{path} key gpus"]


@pytest.mark.parametrize("gpus", ["auto", "0", "8"])
def test_gpus_accepts_auto_or_a_count(tmp_path: Path, gpus: str) -> None:
    config = load_config(write_config(tmp_path / "pipeline.yaml", f"workspace: ws\ngpus: {gpus}\n"))

    assert config.gpus == (gpus if gpus == "auto" else int(gpus))


# ------------------------------------------------------------------------------------------- the file


def test_a_missing_file_is_a_config_error(tmp_path: Path) -> None:
    error = refusal(tmp_path / "nope.yaml")

    assert str(tmp_path / "nope.yaml") in str(error) and "does not exist" in str(error)


@pytest.mark.parametrize(
    ("text", "what"),
    [("", "got NoneType"), ("- workspace: ws\n", "got list"), ("workspace: [ws\n", "not valid YAML")],
    ids=["empty", "a list", "broken YAML"],
)
def test_a_file_that_is_not_a_mapping_of_keys_is_a_config_error(tmp_path: Path, text: str, what: str) -> None:
    path = write_config(tmp_path / "pipeline.yaml", text)

    error = refusal(path)

    assert str(path) in str(error) and what in str(error)


def test_a_file_that_is_not_utf8_is_a_config_error(tmp_path: Path) -> None:
    path = tmp_path / "pipeline.yaml"
    path.write_bytes("workspace: ws\n".encode("utf-16"))

    error = refusal(path)

    assert str(path) in str(error)


def test_a_duplicated_key_is_a_config_error(tmp_path: Path) -> None:
    path = write_config(
        tmp_path / "pipeline.yaml", "workspace: ws\nphase1:\n  recommendations: 40\nphase1:\n  parallel: 2\n"
    )

    error = refusal(path)

    assert "phase1" in str(error)


@pytest.mark.parametrize(
    ("changes", "key"),
    [
        ({"spec_overrides": ["results_dir=/tmp/elsewhere"]}, "spec_overrides"),
        ({"spec_overrides": ["train.results_dir=/tmp/elsewhere"]}, "spec_overrides"),
        ({"phase1": {"spec_overrides": ["inference.results_dir=/x"]}}, "phase1.spec_overrides"),
        ({"phase3": {"spec_overrides": [" evaluate.results_dir = /x"]}}, "phase3.spec_overrides"),
    ],
)
def test_a_results_dir_override_the_pipeline_would_ignore_is_refused(tmp_path: Path, changes, key) -> None:
    with pytest.raises(ConfigError) as refused:
        config_from_mapping({"workspace": str(tmp_path), **changes})
    problem = refused.value.problems[0]
    assert problem.where == f"pipeline config key {key}"
    assert "results_dir is set by the pipeline" in problem.what and "remove that override" in problem.fix


def test_other_spec_overrides_are_kept(tmp_path: Path) -> None:
    config = config_from_mapping({"workspace": str(tmp_path), "spec_overrides": ["train.num_epochs=3"]})
    assert config.spec_overrides == ("train.num_epochs=3",)


# ------------------------------------------------------------------------- GPU shares, pruning, time budget


@pytest.mark.parametrize(("share", "expected"), [(0.25, 0.25), (0.5, 0.5), (0.125, 0.125), (2.0, 2), (1, 1)])
def test_gpus_per_job_takes_whole_gpus_or_a_share_that_divides_one(share: float, expected: float) -> None:
    config = config_from_mapping({"workspace": "ws", "gpus_per_job": share})
    assert config.gpus_per_job == expected
    assert isinstance(config.gpus_per_job, type(expected))


@pytest.mark.parametrize("share", [0.3, 0.6, 1.25, True])
def test_a_share_that_does_not_divide_a_gpu_is_refused(share: float) -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"workspace": "ws", "gpus_per_job": share})
    assert "gpus_per_job" in str(caught.value)


def test_a_gpu_share_on_a_work_pool_is_refused_with_the_reason() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"workspace": "ws", "platform": "docker", "gpus_per_job": 0.25})
    message = str(caught.value)
    assert "whole GPUs" in message and "local platform only" in message


@pytest.mark.parametrize("pruner", ["none", "median", "successive_halving"])
def test_the_pruner_is_one_of_three(pruner: str) -> None:
    config = config_from_mapping(
        {"workspace": "ws", "phase3": {"pruner": pruner, "pruner_warmup_epochs": 2, "num_epochs": 5}}
    )
    assert (config.phase3.pruner, config.phase3.pruner_warmup_epochs) == (pruner, 2)


def test_an_unknown_pruner_is_refused_naming_the_key() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"workspace": "ws", "phase1": {"pruner": "hyperband"}})
    assert "phase1.pruner" in str(caught.value)


def test_a_gpu_hour_budget_replaces_the_recommendations_and_both_at_once_are_refused() -> None:
    config = config_from_mapping({"workspace": "ws", "phase1": {"max_gpu_hours": 1.5}})
    assert config.phase1.max_gpu_hours == 1.5
    with pytest.raises(ConfigError) as caught:
        config_from_mapping({"workspace": "ws", "phase1": {"max_gpu_hours": 1.5, "recommendations": 4}})
    assert "not both" in str(caught.value)


def test_a_pruner_that_could_never_stop_a_trial_is_refused() -> None:
    with pytest.raises(ConfigError) as caught:
        config_from_mapping(
            {"workspace": "ws", "phase1": {"pruner": "median", "num_epochs": 3, "pruner_warmup_epochs": 3}}
        )
    assert "pruner_warmup_epochs (3) must be below num_epochs (3)" in str(caught.value)
    config_from_mapping({"workspace": "ws", "phase1": {"pruner": "none", "num_epochs": 3, "pruner_warmup_epochs": 3}})


def test_a_deployment_for_one_platform_refuses_a_config_for_another(tmp_path: Path) -> None:
    config = config_from_mapping({"workspace": str(tmp_path), "platform": "local"})
    config.require_platform(None)  # a deployment without a platform takes any config
    config.require_platform("local")
    with pytest.raises(ConfigError) as refused:
        config.require_platform("docker", other_deployment="aoi-pipeline/local")
    message = refused.value.render()
    assert "pipeline config key platform" in message and "runs jobs on 'docker'" in message
    assert "set platform: docker in the config, or run the aoi-pipeline/local deployment" in message
