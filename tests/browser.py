"""A headless Chromium driven over the DevTools protocol.

The browser is Debian's `chromium` package (`make test` installs it), never a downloaded one. The
DevTools client is a plain websocket (the `websockets` package, which viser already depends on).
"""

from __future__ import annotations

import base64
import itertools
import json
import subprocess
import time
import urllib.request
from pathlib import Path
from typing import Any, Callable, List, Optional

import pytest
from websockets.sync.client import connect

from tests.processes import start_process_group, stop_process_group, tail

CHROMIUM = Path("/usr/bin/chromium")

LAUNCH_ARGS: List[str] = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--enable-unsafe-swiftshader",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--no-default-browser-check",
    "--mute-audio",
]
"""Flags seen working with viser's client in this environment (WebGL through SwiftShader, no network use)."""


def ensure_chromium() -> Path:
    """The system Chromium (`make test` installs Debian's package when it is missing)."""
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: run `make test`, which installs it, or `apt-get install -y chromium`")
    return CHROMIUM


class Chromium:
    """A headless Chromium with one page, controlled through the DevTools protocol.

    Use as a context manager: leaving it stops the browser and all its helper processes.
    """

    def __init__(self, user_data_dir: Path, log_path: Path, width: int = 1200, height: int = 800) -> None:
        self.user_data_dir = user_data_dir
        self.log_path = log_path
        self.width, self.height = width, height
        self.process: Optional[subprocess.Popen] = None
        self._socket = None
        self._ids = itertools.count(1)

    def __enter__(self) -> Chromium:
        executable = ensure_chromium()
        self.user_data_dir.mkdir(parents=True, exist_ok=False)  # a fresh profile, never a reused one
        with open(self.log_path, "w") as log:
            self.process = start_process_group(
                [executable, *LAUNCH_ARGS, f"--user-data-dir={self.user_data_dir}",
                 f"--window-size={self.width},{self.height}",
                 "--remote-debugging-address=127.0.0.1", "--remote-debugging-port=0", "about:blank"],
                log,
            )  # fmt: skip
        try:
            self._socket = connect(self._page_websocket_url(timeout=60), max_size=None, open_timeout=30)
            self.send("Page.enable")
            self.send("Runtime.enable")
            self.send(
                "Emulation.setDeviceMetricsOverride",
                width=self.width,
                height=self.height,
                deviceScaleFactor=1,
                mobile=False,
            )
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def _page_websocket_url(self, timeout: float) -> str:
        """With --remote-debugging-port=0 Chromium picks a free port and writes it to DevToolsActivePort."""
        assert self.process is not None
        active_port = self.user_data_dir / "DevToolsActivePort"
        deadline = time.monotonic() + timeout
        while True:
            if self.process.poll() is not None:
                pytest.fail(f"chromium exited {self.process.returncode} at start{tail(self.log_path)}")
            if time.monotonic() > deadline:
                pytest.fail(f"chromium opened no DevTools endpoint within {timeout:.0f} s{tail(self.log_path)}")
            lines = active_port.read_text().split() if active_port.exists() else []
            if lines:
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{lines[0]}/json/list", timeout=5) as response:
                        targets = json.load(response)
                    pages = [t for t in targets if t.get("type") == "page"]
                    if pages:
                        return pages[0]["webSocketDebuggerUrl"]
                except OSError:
                    pass
            time.sleep(0.2)

    def send(self, method: str, timeout: float = 60.0, **params) -> dict:
        """Call a DevTools method on the page and return its result (events in between are dropped)."""
        assert self._socket is not None
        message_id = next(self._ids)
        self._socket.send(json.dumps({"id": message_id, "method": method, "params": params}))
        deadline = time.monotonic() + timeout
        while True:
            message = json.loads(self._socket.recv(timeout=max(0.1, deadline - time.monotonic())))
            if message.get("id") == message_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message.get("result", {})

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", url=url)

    def evaluate(self, expression: str) -> Any:
        """The JSON value of a JavaScript expression in the page (promises are awaited)."""
        result = self.send("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression!r} raised {result['exceptionDetails']}")
        return result["result"].get("value")

    def wait_for(self, expression: str, timeout: float, what: str, on_timeout: Callable[[], str] = str) -> Any:
        """Poll a JavaScript expression until it is truthy; return its value, or fail saying what was awaited.

        An expression that throws counts as not yet true: right after a navigation the new document may have no body.
        """
        deadline = time.monotonic() + timeout
        while True:
            try:
                value, error = self.evaluate(expression), ""
            except RuntimeError as raised:
                value, error = None, f" (last error: {raised})"
            if value:
                return value
            if time.monotonic() > deadline:
                pytest.fail(f"timed out after {timeout:.0f} s waiting for {what}{error}; {on_timeout()}")
            time.sleep(0.25)

    def text(self) -> str:
        return self.evaluate("document.body ? document.body.innerText : ''") or ""

    def screenshot(self, path: Path) -> Path:
        data = self.send("Page.captureScreenshot", format="png")["data"]
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        if self._socket is not None:
            try:
                self._socket.close()
            except Exception:
                pass
            self._socket = None
        if self.process is not None:
            stop_process_group(self.process)
