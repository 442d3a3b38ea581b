"""``compress deploy RUN_DIR --remote HOST``: the same deploy, run on a device reached over ssh.

Uses the system's ``ssh`` and ``scp`` (OpenSSH), so the user's ``~/.ssh/config``, keys and agent apply as
they do on the command line (``--ssh-config FILE`` passes ``-F FILE``). Every call is non-interactive
(``BatchMode=yes``: a missing key fails at once instead of asking for a password), has a connect timeout,
keep-alives and an overall time limit. Steps:

1. ``COMPRESS --version`` on the device: compressor must be installed there, at the same version as here.
2. ``mktemp -d`` there; the run's report, resolved recipe, env.json and ONNX files go over with ``scp -r``.
3. ``COMPRESS deploy <copy> [--name/--backend/--engine/--set ...]`` there, its output shown here as it runs.
4. ``device/<name>/`` comes back with ``scp -r`` and is recorded in the local report; the remote copy is
   removed (``COMPRESSOR_KEEP_REMOTE=1`` leaves it, for debugging).

Exit codes are the remote deploy's (0 / 1); any ssh, copy or remote set-up problem is one line and exit 2.
"""

from __future__ import annotations

import json
import re
import shlex
import shutil
import subprocess
import sys
import tempfile
import threading
from dataclasses import dataclass
from pathlib import Path

from .. import artifacts
from ..errors import DeviceError
from ..progress import log
from .folder import FinishedRun, open_run, publish, staging_folder
from .local import DeployOptions, DeviceResult

_VERSION = re.compile(r"^compressor (\S+)\s*$", re.M)


@dataclass(frozen=True)
class Remote:
    host: str                       # an ssh destination: host, user@host or a Host alias of the ssh config
    compress: str = "compress"      # how to run compressor there (a path, or e.g. "python3 -m compressor")
    ssh_config: Path | None = None  # ssh -F
    connect_timeout: int = 10       # seconds, per ssh/scp connection
    timeout: int = 3600             # seconds, for the remote deploy itself (engine builds take minutes)
    keep: bool = False              # leave the copy on the device


def deploy_remote(run_dir: Path, options: DeployOptions, remote: Remote) -> DeviceResult:
    from .record import record_device

    run = open_run(run_dir, options.overrides, options.backends)  # a bad folder or --set stops here, before ssh
    ssh = Ssh(remote)
    ssh.check_compressor()
    workdir = ssh.output("mktemp -d -t compressor-deploy.XXXXXX", "make a work folder").strip()
    try:
        with tempfile.TemporaryDirectory(prefix="compressor-deploy-") as tmp:
            staged = stage_files(run, Path(tmp) / "run")
            size = sum(p.stat().st_size for p in staged.rglob("*") if p.is_file())
            log(f"ssh {remote.host}: copying the run ({size / 1e6:.1f} MB) to {workdir}")
            ssh.copy_to(staged, workdir)
            ssh.deploy(f"{workdir}/run", remote_arguments(options))
            log(f"ssh {remote.host}: fetching {artifacts.DEVICES_DIR}/ back")
            fetched = ssh.copy_from(f"{workdir}/run/{artifacts.DEVICES_DIR}", Path(tmp) / "back")
            summary, folder = _adopt(run, fetched)
    finally:
        if not remote.keep:
            ssh.cleanup(workdir)
    record_device(run.layout, run.report, summary)
    return DeviceResult(name=summary["name"], folder=folder, summary=summary)


def stage_files(run: FinishedRun, dest: Path) -> Path:
    """The files a device needs, under their run-folder paths in ``dest`` (hard links where possible)."""
    layout = run.layout
    needed = [layout.report_json, layout.resolved_recipe, layout.env, *run.files.values()]
    needed += [artifacts.tensorrt_int8_file(p) for p in run.files.values() if artifacts.tensorrt_int8_file(p).is_file()]
    for path in dict.fromkeys(p for p in needed if p.is_file()):
        target = dest / path.relative_to(layout.root)
        target.parent.mkdir(parents=True, exist_ok=True)
        try:
            target.hardlink_to(path)
        except OSError:
            shutil.copy2(path, target)
    return dest


def remote_arguments(options: DeployOptions) -> list[str]:
    args = ["--name", options.name] if options.name else []
    args += [x for b in options.backends for x in ("--backend", b)]
    return args + [x for o in options.overrides for x in ("--set", o)]


def _adopt(run: FinishedRun, fetched: Path) -> tuple[dict, Path]:
    """Move the fetched ``device/<name>/`` into the local run folder; its summary."""
    found = [p for p in fetched.iterdir() if p.is_dir() and not p.name.startswith(".")] if fetched.is_dir() else []
    if len(found) != 1 or not (found[0] / "device.json").is_file():
        raise DeviceError(f"the device sent back no finished device folder ({[p.name for p in found]})")
    summary = json.loads((found[0] / "device.json").read_text(encoding="utf-8"))
    folder = run.layout.device(summary["name"])
    staging = staging_folder(folder)
    shutil.rmtree(staging, ignore_errors=True)
    staging.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(str(found[0]), str(staging))
    return summary, publish(staging, folder)


class Ssh:
    """ssh / scp to one host, each call bounded in time and turned into one clear line when it fails."""

    def __init__(self, remote: Remote):
        self.remote = remote
        self.options = [*(["-F", str(remote.ssh_config)] if remote.ssh_config else []), "-o", "BatchMode=yes",
                        "-o", f"ConnectTimeout={remote.connect_timeout}", "-o", "ServerAliveInterval=15",
                        "-o", "ServerAliveCountMax=4"]
        self.compress = shlex.join(shlex.split(remote.compress))

    def output(self, command: str, what: str, timeout: int | None = None) -> str:
        done = self._run(["ssh", *self.options, self.remote.host, command], what, timeout)
        return done.stdout

    def check_compressor(self) -> None:
        from .. import __version__

        done = self._run(["ssh", *self.options, self.remote.host, f"{self.compress} --version"], "check compressor",
                         ok=(0, 126, 127))
        found = _VERSION.search(done.stdout or "")
        if done.returncode in (126, 127) or found is None:
            raise DeviceError(f"{self.remote.host}: compressor is not installed there ('{self.remote.compress} "
                              f"--version' gave: {_last_line(done.stderr or done.stdout) or f'exit {done.returncode}'}); "
                              f"install it (pip install 'compressor=={__version__}') or name it with --remote-compress "
                              "/path/to/venv/bin/compress")
        if found.group(1) != __version__:
            raise DeviceError(f"{self.remote.host} has compressor {found.group(1)}, this machine {__version__}: install "
                              f"the same version on the device (pip install 'compressor=={__version__}')")

    def copy_to(self, local: Path, remote_dir: str) -> None:
        self._run(["scp", "-q", "-r", *self.options, str(local), f"{self.remote.host}:{remote_dir}/"],
                  "copy the run to the device", self.remote.timeout)

    def copy_from(self, remote_path: str, local: Path) -> Path:
        self._run(["scp", "-q", "-r", *self.options, f"{self.remote.host}:{remote_path}", str(local)],
                  "copy the device folder back", self.remote.timeout)
        return local

    def deploy(self, run_dir: str, args: list[str]) -> int:
        """Run the deploy there, showing its output here; exit codes 0 and 1 are results, 2 a user error."""
        command = f"{self.compress} deploy {shlex.quote(run_dir)} {shlex.join(args)}".strip()
        cmd = ["ssh", *self.options, self.remote.host, command]
        try:
            process = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        except OSError as exc:
            raise DeviceError(f"cannot run ssh ({exc.strerror or exc}): install OpenSSH's client") from None
        errors: list[str] = []
        prefix = f"[{self.remote.host}] "
        readers = [threading.Thread(target=_relay, args=(process.stdout, [], sys.stdout, prefix), daemon=True),
                   threading.Thread(target=_relay, args=(process.stderr, errors, sys.stderr, prefix), daemon=True)]
        for reader in readers:
            reader.start()
        try:
            code = process.wait(timeout=self.remote.timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            raise DeviceError(f"compress deploy on {self.remote.host} ran past --timeout {self.remote.timeout} s; "
                              "it was stopped (raise --timeout for long engine builds)") from None
        for reader in readers:
            reader.join(timeout=5)
        if code == 255:
            raise DeviceError(_ssh_problem(self.remote.host, "\n".join(errors)))
        if code not in (0, 1):
            said = next((e.removeprefix("error: ") for e in reversed(errors) if e.startswith("error: ")), None)
            raise DeviceError(f"on {self.remote.host}: {said or _last_line(chr(10).join(errors)) or f'exit {code}'}")
        return code

    def cleanup(self, workdir: str) -> None:
        try:
            subprocess.run(["ssh", *self.options, self.remote.host, f"rm -rf {shlex.quote(workdir)}"],
                           capture_output=True, timeout=self.remote.connect_timeout + 30, check=False)
        except (OSError, subprocess.SubprocessError):
            pass  # best effort: the folder is in the device's temp space

    def _run(self, cmd: list[str], what: str, timeout: int | None = None, ok=(0,)) -> subprocess.CompletedProcess:
        limit = timeout or self.remote.connect_timeout + 60
        try:
            done = subprocess.run(cmd, capture_output=True, text=True, timeout=limit, check=False)
        except FileNotFoundError:
            raise DeviceError(f"cannot run {cmd[0]}: install OpenSSH's client (ssh, scp)") from None
        except subprocess.TimeoutExpired:
            raise DeviceError(f"{self.remote.host}: '{what}' took more than {limit} s; check the connection") from None
        if done.returncode == 255 or (done.returncode not in ok and cmd[0] == "scp"):
            raise DeviceError(_ssh_problem(self.remote.host, done.stderr, what))
        if done.returncode not in ok:
            raise DeviceError(f"{self.remote.host}: could not {what}: {_last_line(done.stderr) or f'exit {done.returncode}'}")
        return done


def _relay(stream, kept: list[str], to, prefix: str) -> None:
    """Echo a remote stream here as it comes (each line marked with the host), keeping its lines; an ``error:``
    line is said once, at the end."""
    for line in stream:
        line = line.rstrip("\n")
        kept.append(line)
        if not line.startswith("error: "):
            print(prefix + line, file=to, flush=True)


_SSH_HINTS = (
    ("Could not resolve hostname", "cannot resolve the host name: check --remote and your ssh config"),
    ("Permission denied", "the device refused the login: add your public key to its ~/.ssh/authorized_keys "
                          "(ssh-copy-id), or name the key with IdentityFile in your ssh config"),
    ("Host key verification failed", "its host key is unknown or changed: connect once with plain ssh to accept it, "
                                     "or fix ~/.ssh/known_hosts"),
    ("Connection refused", "nothing listens for ssh there: is sshd running, and is the port right?"),
    ("timed out", "the connection timed out: is the device on and reachable?"),
    ("No route to host", "no route to the device: check the network"),
)


def _ssh_problem(host: str, stderr: str, what: str = "run the deploy") -> str:
    text = stderr or ""
    for needle, hint in _SSH_HINTS:
        if needle in text:
            return f"ssh {host}: {hint} ({_last_line(text)})"
    return f"ssh {host}: could not {what}: {_last_line(text) or 'no message from ssh'}"


def _last_line(text: str | None) -> str:
    lines = [line.strip() for line in (text or "").splitlines() if line.strip()]
    return lines[-1] if lines else ""
