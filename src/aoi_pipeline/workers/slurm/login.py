"""The `slurm-login` Prefect block: how the Slurm worker reaches a login node over ssh.

The worker submits on the machine it runs on when it is a login node. Otherwise it uses ssh, configured by
this block (referenced from the work pool's `login` job variable) or, without a block, by the worker's
environment: `SLURM_HOSTNAME` (a comma list of login nodes), `SLURM_USER` and `SSH_KEY_PATH`. The private
key is a secret field: Prefect stores it encrypted and shows it masked; the worker writes it only to a
0600 file in a private temporary directory while it talks to the cluster.
"""

from __future__ import annotations

from collections.abc import Mapping

from prefect.blocks.core import Block
from pydantic import Field, SecretStr

from aoi_pipeline.workers.slurm.shell import SshLogin


class SlurmLogin(Block):
    """A Slurm login node reached over ssh, with the identity to use."""

    _block_type_name = "Slurm Login"
    _block_type_slug = "slurm-login"
    _description = "ssh access to a Slurm login node for the aoi-pipeline Slurm worker."

    hostname: str = Field(description="Login node host name, or a comma list tried in order.")
    user: str | None = Field(default=None, description="User name on the cluster (default: ssh's).")
    port: int = Field(default=22, description="ssh port.")
    private_key: SecretStr | None = Field(default=None, description="Private key (OpenSSH format).")
    key_path: str | None = Field(default=None, description="Path of a private key file on the worker's machine.")
    known_hosts: str | None = Field(
        default=None,
        description="known_hosts lines of the login nodes (default: the worker user's known_hosts).",
    )

    def ssh_login(self) -> SshLogin:
        return SshLogin(
            hosts=split_hosts(self.hostname),
            user=self.user,
            port=self.port,
            key_path=self.key_path,
            private_key=self.private_key.get_secret_value() if self.private_key else None,
            known_hosts=self.known_hosts,
        )


def split_hosts(text: str) -> tuple[str, ...]:
    return tuple(host.strip() for host in text.split(",") if host.strip())


def login_from_environment(environ: Mapping[str, str]) -> SshLogin | None:
    """ssh settings from SLURM_HOSTNAME / SLURM_USER / SSH_KEY_PATH; None (submit locally) without a host."""
    hosts = split_hosts(environ.get("SLURM_HOSTNAME", ""))
    if not hosts:
        return None
    return SshLogin(hosts=hosts, user=environ.get("SLURM_USER") or None, key_path=environ.get("SSH_KEY_PATH") or None)
