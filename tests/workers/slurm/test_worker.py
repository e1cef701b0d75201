"""The Slurm worker's registration, job configuration and login choice, without a cluster."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import SecretStr

from aoi_pipeline.errors import ConfigError
from aoi_pipeline.workers.slurm import SlurmJobConfiguration, SlurmLogin, SlurmWorker
from aoi_pipeline.workers.slurm.shell import LocalShell, SshLogin, open_shell, ssh_options


def test_prefect_finds_the_worker_type_slurm_through_the_installed_entry_point() -> None:
    # A fresh interpreter: only the `prefect.collections` entry point can have registered the type there.
    code = "from prefect.workers.base import BaseWorker as B; print(B.get_worker_class_from_type('slurm').__module__)"
    shown = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert shown.stdout.strip() == "aoi_pipeline.workers.slurm.worker"


def test_the_default_template_offers_every_job_variable_of_the_issue() -> None:
    template = SlurmWorker.get_default_base_job_template()
    variables = set(template["variables"]["properties"])
    expected = {"partition", "account", "qos", "time_limit", "gpus", "cpus_per_task", "memory", "nodes"}
    expected |= {"extra_options", "runner", "image", "mounts", "env_names", "login"}
    assert expected <= variables
    assert template["job_configuration"]["gpus"] == "{{ gpus }}"
    assert template["variables"]["properties"]["runner"]["enum"] == ["none", "pyxis", "apptainer"]


def test_env_names_copy_values_from_the_workers_environment() -> None:
    configuration = SlurmJobConfiguration(env={"PREFECT__FLOW_RUN_ID": "r1"}, env_names=["NGC_KEY"], name="t")
    request = configuration.sbatch_request({"NGC_KEY": "value-1", "OTHER": "x"})
    assert dict(request.env) == {"PREFECT__FLOW_RUN_ID": "r1", "NGC_KEY": "value-1"}


def test_a_missing_env_name_or_a_bad_value_is_refused_before_anything_is_submitted() -> None:
    configuration = SlurmJobConfiguration(env_names=["NGC_KEY"], runner="pyxis", name="t")
    with pytest.raises(ConfigError) as raised:
        configuration.sbatch_request({})
    message = str(raised.value)
    assert "NGC_KEY not set in the worker's environment" in message
    assert "runner pyxis needs an image" in message


def test_without_a_block_or_slurm_hostname_the_worker_submits_here() -> None:
    configuration = SlurmJobConfiguration()
    assert configuration.ssh_login({}) is None
    with open_shell(None) as shell:
        assert isinstance(shell, LocalShell)
        assert shell.where == "local"


def test_slurm_hostname_user_and_key_path_select_ssh() -> None:
    login = SlurmJobConfiguration().ssh_login({"SLURM_HOSTNAME": "login1, login2", "SLURM_USER": "aoi"})
    assert login == SshLogin(hosts=("login1", "login2"), user="aoi")


def test_a_block_wins_over_the_environment_and_keeps_its_key_secret() -> None:
    block = SlurmLogin(hostname="login9", user="u", private_key=SecretStr("-----KEY-----"))
    configuration = SlurmJobConfiguration(login=block)
    login = configuration.ssh_login({"SLURM_HOSTNAME": "other"})
    assert login is not None
    assert (login.hosts, login.user, login.private_key) == (("login9",), "u", "-----KEY-----")
    assert "-----KEY-----" not in repr(block)
    assert "-----KEY-----" not in configuration.model_dump_json()


def test_ssh_never_prompts_and_checks_host_keys() -> None:
    options = ssh_options(SshLogin(hosts=("h",)), "/k/id", "/k/known_hosts")
    text = " ".join(options)
    assert "BatchMode=yes" in text
    assert "StrictHostKeyChecking=yes" in text
    assert "UserKnownHostsFile=/k/known_hosts" in text
    assert "-i /k/id" in text


def test_an_unreachable_login_node_names_the_host_and_never_the_key(tmp_path: Path) -> None:
    login = SshLogin(hosts=("127.0.0.1",), user="nobody", port=1, private_key="SECRET-KEY-MATERIAL")
    with pytest.raises(ConnectionError) as raised, open_shell(login, probe_timeout=20):
        pass
    assert "nobody@127.0.0.1" in str(raised.value)
    assert "SECRET-KEY-MATERIAL" not in str(raised.value)
