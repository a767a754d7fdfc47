"""Processes the tests start and stop: ports on the loopback interface, process groups, their logs."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import time
from pathlib import Path
from typing import IO, Any, Callable, List, Optional

import pytest


def free_port() -> int:
    """A TCP port on the loopback interface that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def port_is_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(1.0)
        return sock.connect_ex((host, port)) == 0


def wait_until(
    condition: Callable[[], bool],
    process: subprocess.Popen,
    timeout: float,
    what: str,
    log: Optional[Path] = None,
    interval: float = 0.25,
) -> None:
    """Poll `condition` until it holds; fail early, with the process's output, if `process` exits first."""
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"{Path(process.args[0]).name} exited {process.returncode} before {what}{tail(log)}")
        if time.monotonic() > deadline:
            pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{tail(log)}")
        time.sleep(interval)


def wait_for_port(
    port: int, process: subprocess.Popen, timeout: float, log: Optional[Path] = None, host: str = "127.0.0.1"
) -> None:
    """Wait until `process` accepts connections on `port`."""
    wait_until(lambda: port_is_open(port, host), process, timeout, f"listening on {host}:{port}", log)


def tail(log: Optional[Path], chars: int = 4000) -> str:
    if log is None or not log.exists():
        return ""
    return f"\n--- {log}\n{log.read_text(errors='replace')[-chars:]}"


def start_process_group(args: List[Any], log: IO, **kwargs) -> subprocess.Popen:
    """Start a command as the leader of a new process group, so that it can be stopped with all its children."""
    return subprocess.Popen(
        [str(a) for a in args], stdout=log, stderr=subprocess.STDOUT, start_new_session=True, **kwargs
    )


def group_alive(pgid: int) -> bool:
    """Whether any process of the process group `pgid` still exists (zombies of our own children included)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    return True


def stop_process_group(process: subprocess.Popen, timeout: float = 10.0) -> None:
    """SIGTERM the process group led by `process`, SIGKILL what is left after `timeout`, and reap the leader."""
    pgid = process.pid
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(pgid, sig)
        except ProcessLookupError:
            break
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            process.poll()  # reaps the leader, so that a zombie does not count as alive
            if not group_alive(pgid):
                break
            time.sleep(0.1)
        else:
            continue
        break
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        pass


def processes_mentioning(text: str) -> List[int]:
    """Ids of live processes whose command line contains `text`."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit() or int(entry.name) == os.getpid():
            continue
        try:
            cmdline = (entry / "cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
            state = (entry / "stat").read_text().rsplit(")", 1)[1].split()[0]
        except OSError:
            continue
        if text in cmdline and state != "Z":
            found.append(int(entry.name))
    return found
