"""Where the Slurm commands run: on this machine (a login node) or over ssh on a login node.

`LocalShell` runs `sbatch`, `scontrol`, `sacct` and `scancel` here. `SshShell` runs them on a login node
with `ssh -o BatchMode=yes` (never a password prompt) and strict host-key checking, as the reference's
Slurm platform does; hosts are tried in order until one answers. A private key given as a secret (from the
`slurm-login` block) lives only in a 0600 file inside a private temporary directory for the duration of
`open_shell`, and is never printed: errors name the host and the option, never a key.
"""

from __future__ import annotations

import os
import shlex
import subprocess
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

_CONNECT_TIMEOUT_S = 15
# ssh exits 255 for its own failures (connection, authentication); anything else is the remote command's.
SSH_FAILURE = 255
Completed = subprocess.CompletedProcess[str]


class SlurmShell(Protocol):
    """Runs one Slurm command where the cluster is reachable."""

    @property
    def where(self) -> str: ...

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60) -> Completed: ...


@dataclass
class LocalShell:
    """Commands run on this machine, which must be a Slurm login (submit) node."""

    where: str = "local"

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60) -> Completed:
        return subprocess.run(list(argv), input=stdin, capture_output=True, text=True, timeout=timeout, check=False)


@dataclass(frozen=True)
class SshLogin:
    """How to reach the login node: hosts (tried in order), user, port, and an identity (file or secret)."""

    hosts: tuple[str, ...]
    user: str | None = None
    port: int = 22
    key_path: str | None = None
    private_key: str | None = None
    known_hosts: str | None = None


@dataclass
class SshShell:
    """Commands run on a login node over ssh."""

    login: SshLogin
    options: tuple[str, ...]
    host: str

    @property
    def where(self) -> str:
        return f"{self.login.user}@{self.host}" if self.login.user else self.host

    def run(self, argv: Sequence[str], *, stdin: str | None = None, timeout: float = 60) -> Completed:
        command = ["ssh", *self.options, "-p", str(self.login.port), self.where, "--", shlex.join(list(argv))]
        return subprocess.run(command, input=stdin, capture_output=True, text=True, timeout=timeout, check=False)


def ssh_options(login: SshLogin, key_file: str | None, known_hosts_file: str | None) -> tuple[str, ...]:
    """The ssh options: batch mode, public keys only, strict host keys, the identity when one is given."""
    options = [
        "-o", "BatchMode=yes",
        "-o", "PasswordAuthentication=no",
        "-o", "PreferredAuthentications=publickey",
        "-o", f"ConnectTimeout={_CONNECT_TIMEOUT_S}",
        "-o", "StrictHostKeyChecking=yes",
    ]  # fmt: skip
    if known_hosts_file:
        options += ["-o", f"UserKnownHostsFile={known_hosts_file}"]
    if key_file:
        options += ["-i", key_file, "-o", "IdentitiesOnly=yes"]
    return tuple(options)


@contextmanager
def open_shell(login: SshLogin | None, *, probe_timeout: float = 30) -> Iterator[SlurmShell]:
    """A shell on the cluster: local without a login, else ssh to the first host that answers."""
    if login is None:
        yield LocalShell()
        return
    with tempfile.TemporaryDirectory(prefix="aoi-slurm-ssh-") as private:
        key_file = login.key_path
        if login.private_key:
            key_file = _write_private(Path(private, "id"), login.private_key.strip() + "\n")
        known = _write_private(Path(private, "known_hosts"), login.known_hosts) if login.known_hosts else None
        options = ssh_options(login, key_file, known)
        failures = []
        for host in login.hosts:
            shell = SshShell(login, options, host)
            try:
                done = shell.run(["true"], timeout=probe_timeout)
            except subprocess.TimeoutExpired:
                failures.append(f"{shell.where}: no answer within {probe_timeout:g} s")
                continue
            if done.returncode == 0:
                yield shell
                return
            failures.append(f"{shell.where}: {(done.stderr.strip() or 'ssh failed').splitlines()[-1]}")
        raise ConnectionError("no Slurm login node answered over ssh: " + "; ".join(failures))


def _write_private(path: Path, text: str) -> str:
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as handle:
        handle.write(text)
    return str(path)
