"""A real OpenSSH server on 127.0.0.1 for the ``compress deploy --remote`` tests: a throw-away host key and
client key, an ssh config naming them, started by the test and stopped after it. Tests skip with the reason
when sshd (Debian's openssh-server; ``.ci/run`` installs it where it can) cannot start here."""

from __future__ import annotations

import getpass
import os
import shutil
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

SSHD = next((p for p in ("/usr/sbin/sshd", shutil.which("sshd") or "") if p and Path(p).is_file()), None)
SFTP = next((p for p in ("/usr/lib/openssh/sftp-server", "/usr/libexec/openssh/sftp-server") if Path(p).is_file()), None)


@dataclass(frozen=True)
class Sshd:
    port: int
    config: Path         # the client's ssh config (ssh -F): Host 127.0.0.1 with the port, key and user
    wrong_key: Path      # a client config whose key the server does not accept
    process: subprocess.Popen


def start_sshd(folder: Path) -> Sshd | str:
    """A running server, or why it cannot run here."""
    if SSHD is None or shutil.which("ssh") is None or shutil.which("ssh-keygen") is None:
        return "OpenSSH server or client not installed (apt-get install openssh-server openssh-client)"
    folder.mkdir(parents=True, exist_ok=True)
    for name in ("host_key", "client_key", "other_key"):
        subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", str(folder / name)], check=True)
    shutil.copy(folder / "client_key.pub", folder / "authorized_keys")
    port = _free_port()
    server = folder / "sshd_config"
    server.write_text(_server_config(folder, port))
    if os.geteuid() == 0:
        Path("/run/sshd").mkdir(parents=True, exist_ok=True)  # Debian's privilege separation folder
    log = open(folder / "sshd.log", "w")  # noqa: SIM115 - kept open while the server runs
    process = subprocess.Popen([SSHD, "-D", "-e", "-f", str(server)], stdout=log, stderr=subprocess.STDOUT)
    if not _listening(port, process):
        process.kill()
        return f"sshd did not start: {(folder / 'sshd.log').read_text().strip()[-300:]}"
    config = folder / "ssh_config"
    config.write_text(_client_config(port, folder / "client_key"))
    wrong = folder / "ssh_config_wrong_key"
    wrong.write_text(_client_config(port, folder / "other_key"))
    return Sshd(port=port, config=config, wrong_key=wrong, process=process)


def _server_config(folder: Path, port: int) -> str:
    lines = [f"Port {port}", "ListenAddress 127.0.0.1", f"HostKey {folder / 'host_key'}",
             f"AuthorizedKeysFile {folder / 'authorized_keys'}", "PasswordAuthentication no",
             "KbdInteractiveAuthentication no", "PubkeyAuthentication yes", "PermitRootLogin prohibit-password",
             "StrictModes no", "UsePAM no", f"PidFile {folder / 'sshd.pid'}"]
    if SFTP:
        lines.append(f"Subsystem sftp {SFTP}")  # scp speaks SFTP since OpenSSH 9
    return "\n".join(lines) + "\n"


def _client_config(port: int, key: Path) -> str:
    return (f"Host 127.0.0.1\n  Port {port}\n  User {getpass.getuser()}\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
            "  StrictHostKeyChecking no\n  UserKnownHostsFile /dev/null\n  LogLevel ERROR\n")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _listening(port: int, process: subprocess.Popen, seconds: float = 10.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if process.poll() is not None:
            return False
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return True
        except OSError:
            time.sleep(0.1)
    return False
