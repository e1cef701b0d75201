"""The sbatch script is rendered without Slurm: directives, runners, quoting and refused values."""

from __future__ import annotations

import subprocess

import pytest

from aoi_pipeline.workers.slurm.sbatch import (
    SbatchRequest,
    describe,
    directives,
    job_name,
    parse_time_limit,
    render_script,
    request_problems,
)


def _request(**changes: object) -> SbatchRequest:
    base = {"job_name": "trial-003", "command": "prefect flow-run execute"}
    return SbatchRequest(**{**base, **changes})  # type: ignore[arg-type]


def test_a_full_request_renders_every_directive_in_order() -> None:
    request = _request(
        partition="polar",
        account="aoi",
        qos="high",
        time_limit="04:00:00",
        gpus=4,
        cpus_per_task=16,
        memory="64G",
        nodes=1,
        working_dir="/lustre/ws",
        log_dir="/lustre/logs/",
        extra_options=("--exclusive",),
    )
    assert directives(request) == [
        "--job-name=trial-003",
        "--nodes=1",
        "--ntasks-per-node=1",
        "--partition=polar",
        "--account=aoi",
        "--qos=high",
        "--time=04:00:00",
        "--gres=gpu:4",
        "--cpus-per-task=16",
        "--mem=64G",
        "--chdir=/lustre/ws",
        "--output=/lustre/logs/%x-%j.out",
        "--error=/lustre/logs/%x-%j.out",
        "--open-mode=append",
        "--no-requeue",
        "--exclusive",
    ]


def test_unset_options_are_left_to_the_cluster_and_a_gpu_type_goes_into_the_gres() -> None:
    assert directives(_request()) == ["--job-name=trial-003", "--nodes=1", "--ntasks-per-node=1", "--no-requeue"]
    assert "--gres=gpu:a100:2" in directives(_request(gpus=2, gpu_type="a100"))
    assert "--requeue" in directives(_request(requeue=True))


def test_runner_none_puts_the_python_environment_first_on_path_and_execs_the_command() -> None:
    script = render_script(_request(python_env="/opt/venvs/aoi/", setup_commands=("module load cuda",)))
    lines = script.splitlines()
    assert lines[0] == "#!/bin/bash"
    assert lines[-3:] == [
        'export PATH=/opt/venvs/aoi/bin:"$PATH"',
        "module load cuda",
        "exec prefect flow-run execute",
    ]


def test_pyxis_runs_one_task_in_the_image_with_its_mounts() -> None:
    script = render_script(_request(runner="pyxis", image="/lustre/aoi.sqsh", mounts=("/lustre/ws:/ws", "/d:/d:ro")))
    assert script.splitlines()[-1] == (
        "exec srun --nodes=1 --ntasks=1 --container-image=/lustre/aoi.sqsh "
        "--container-mounts=/lustre/ws:/ws,/d:/d:ro prefect flow-run execute"
    )


def test_apptainer_runs_the_image_with_nv_and_binds() -> None:
    script = render_script(_request(runner="apptainer", image="/images/aoi.sif", mounts=("/lustre/ws:/ws",)))
    assert script.splitlines()[-1] == (
        "exec srun --nodes=1 --ntasks=1 apptainer exec --nv --bind /lustre/ws:/ws /images/aoi.sif "
        "prefect flow-run execute"
    )


def test_environment_values_are_shell_quoted_and_the_description_names_but_never_shows_them() -> None:
    secret = "s3cr3t value'; rm -rf /"
    request = _request(env={"PREFECT_API_KEY": secret, "PREFECT__FLOW_RUN_ID": "abc"})
    script = render_script(request)
    shown = subprocess.run(
        ["bash", "-c", script.replace("exec prefect flow-run execute", 'printf %s "$PREFECT_API_KEY"')],
        capture_output=True,
        text=True,
        check=True,
    )
    assert shown.stdout == secret
    assert secret not in describe(request)
    assert "PREFECT_API_KEY" in describe(request)


def test_a_rendered_script_is_valid_bash() -> None:
    script = render_script(_request(runner="pyxis", image="reg#img:1", mounts=("/a:/b",), env={"A": "1"}))
    assert subprocess.run(["bash", "-n"], input=script, text=True, check=False).returncode == 0


@pytest.mark.parametrize(
    ("text", "minutes"),
    [("90", 90), ("1:30", 2), ("04:00:00", 240), ("2-00:00:00", 2880), ("1-12", 2160), ("0-00:01", 1)],
)
def test_time_limits_in_every_slurm_format(text: str, minutes: int) -> None:
    assert parse_time_limit(text) == minutes


def test_unlimited_has_no_minutes_and_garbage_is_refused() -> None:
    assert parse_time_limit("UNLIMITED") is None
    with pytest.raises(ValueError):
        parse_time_limit("4h")


def test_job_names_lose_characters_slurm_or_the_shell_would_interpret() -> None:
    assert job_name("trial 3/%j; x") == "trial-3-j-x"
    assert job_name("   ") == "prefect-flow-run"


@pytest.mark.parametrize(
    ("changes", "where"),
    [
        ({"runner": "docker"}, "runner"),
        ({"runner": "pyxis"}, "image"),
        ({"image": "nvcr.io/x:1"}, "image"),
        ({"mounts": ("/a:/b",)}, "mounts"),
        ({"runner": "apptainer", "image": "x.sif", "python_env": "/venv"}, "python_env"),
        ({"runner": "pyxis", "image": "x", "mounts": ("/a",)}, "mounts[0]"),
        ({"time_limit": "4h"}, "time_limit"),
        ({"memory": "lots"}, "memory"),
        ({"partition": "a b"}, "partition"),
        ({"gpu_type": "a100"}, "gpu_type"),
        ({"extra_options": ("--time=10",)}, "extra_options[0]"),
        ({"extra_options": ("exclusive",)}, "extra_options[0]"),
        ({"env": {"NOT A NAME": "x"}}, "env"),
    ],
)
def test_values_slurm_would_misread_or_the_script_would_ignore_are_refused(changes: dict, where: str) -> None:
    problems = request_problems(_request(**changes))
    assert [problem.where for problem in problems] == [f"slurm job variables.{where}"]


def test_a_sound_request_has_no_problems() -> None:
    request = _request(runner="pyxis", image="/i.sqsh", mounts=("/a:/b:ro",), time_limit="1-00:00:00", memory="8G")
    assert request_problems(request) == []
