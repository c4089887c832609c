"""A headless Chromium driven over the DevTools protocol, to check pages as a reader's
browser shows them: console errors, uncaught exceptions, failed or network requests,
images that do not decode; and to take screenshots. Used by tests/test_reports.py and
scripts/report_screenshots.py; needs Debian's `chromium` and the `websocket-client`
package (the dev extra)."""

from __future__ import annotations

import base64
import dataclasses
import json
import os
import shutil
import subprocess
import tempfile
import time
import urllib.request
from pathlib import Path

START_TIMEOUT_S = 30
CALL_TIMEOUT_S = 30

# Every <img> of the page: decoded (decode() resolved), complete, with a natural size.
IMAGES_JS = """Promise.all(Array.from(document.images).map(img => img.decode().then(() => null, e => String(e))))
  .then(errors => Array.from(document.images).map((img, i) => ({
      complete: img.complete, width: img.naturalWidth, height: img.naturalHeight,
      error: errors[i], src: img.currentSrc.slice(0, 40)})))"""

# Every <table> of the page as rows of cell texts, its header row first.
TABLES_JS = """Array.from(document.querySelectorAll('table')).map(t =>
  Array.from(t.rows).map(r => Array.from(r.cells).map(c => c.textContent)))"""


def chromium() -> str | None:
    """The Chromium executable, or None when none is installed."""
    return shutil.which("chromium") or shutil.which("chromium-browser") or shutil.which("google-chrome")


@dataclasses.dataclass
class PageLoad:
    """What loading one page produced."""

    url: str
    errors: list[str]  # console errors, uncaught exceptions, error log entries, failed requests
    requests: list[str]  # every URL the page requested (itself included)


class Browser:
    """One headless Chromium with one tab; a context manager."""

    def __init__(self, executable: str):
        import websocket  # the dev extra's websocket-client

        self._profile = tempfile.mkdtemp(prefix="dlcli-chromium-")
        flags = ["--headless=new", "--remote-debugging-port=0", f"--user-data-dir={self._profile}", "--no-first-run",
                 "--no-default-browser-check", "--disable-gpu", "--disable-extensions", "--hide-scrollbars"]
        if os.geteuid() == 0:
            flags.append("--no-sandbox")  # Chromium refuses to start as root with its sandbox
        self._process = subprocess.Popen([executable, *flags, "about:blank"], stdout=subprocess.DEVNULL,
                                         stderr=subprocess.DEVNULL)
        try:
            port = self._port()
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=CALL_TIMEOUT_S) as answer:
                tab = next(t for t in json.load(answer) if t["type"] == "page")
            self._socket = websocket.create_connection(tab["webSocketDebuggerUrl"], timeout=CALL_TIMEOUT_S,
                                                       suppress_origin=True)
        except BaseException:
            self.close()
            raise
        self._next_id = 0
        self._events: list[dict] = []
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.call(f"{domain}.enable")

    def _port(self) -> int:
        """The debugging port Chromium chose, from DevToolsActivePort in its profile."""
        active = Path(self._profile) / "DevToolsActivePort"
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                raise RuntimeError(f"chromium exited with code {self._process.returncode} at start")
            lines = active.read_text().split() if active.exists() else []
            if lines:
                return int(lines[0])
            time.sleep(0.05)
        raise RuntimeError(f"chromium wrote no DevToolsActivePort within {START_TIMEOUT_S} s")

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        if getattr(self, "_socket", None) is not None:
            self._socket.close()
        self._process.terminate()
        try:
            self._process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self._process.kill()
            self._process.wait()
        shutil.rmtree(self._profile, ignore_errors=True)

    def call(self, method: str, **params) -> dict:
        """Send one command and return its result; events that arrive meanwhile are kept."""
        self._next_id += 1
        self._socket.send(json.dumps({"id": self._next_id, "method": method, "params": params}))
        while True:
            message = json.loads(self._socket.recv())
            if message.get("id") == self._next_id:
                if "error" in message:
                    raise RuntimeError(f"{method}: {message['error']}")
                return message["result"]
            self._events.append(message)

    def _wait_for(self, method: str) -> None:
        deadline = time.monotonic() + CALL_TIMEOUT_S
        while not any(e.get("method") == method for e in self._events):
            if time.monotonic() > deadline:
                raise TimeoutError(f"no {method} within {CALL_TIMEOUT_S} s")
            self._events.append(json.loads(self._socket.recv()))

    def open(self, url: str) -> PageLoad:
        """Load `url` and wait for its load event; what went wrong on the way."""
        self._events = []
        navigation = self.call("Page.navigate", url=url)
        if navigation.get("errorText"):
            return PageLoad(url, [f"navigation failed: {navigation['errorText']}"], [url])
        self._wait_for("Page.loadEventFired")
        self.evaluate("new Promise(done => setTimeout(done, 50))")  # late console messages arrive
        errors, requests = [], []
        for event in self._events:
            method, params = event.get("method"), event.get("params", {})
            if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "assert"):
                errors.append("console: " + " ".join(str(a.get("value", a.get("description"))) for a in params["args"]))
            elif method == "Runtime.exceptionThrown":
                errors.append("exception: " + params["exceptionDetails"].get("text", ""))
            elif method == "Log.entryAdded" and params["entry"]["level"] == "error":
                errors.append(f"log: {params['entry']['text']} {params['entry'].get('url', '')}".strip())
            elif method == "Network.loadingFailed":
                errors.append(f"request failed: {params['errorText']}")
            elif method == "Network.requestWillBeSent":
                requests.append(params["request"]["url"])
        return PageLoad(url, errors, requests)

    def evaluate(self, expression: str):
        """The value of a JavaScript expression in the page (a promise is awaited)."""
        result = self.call("Runtime.evaluate", expression=expression, awaitPromise=True, returnByValue=True)
        if "exceptionDetails" in result:
            raise RuntimeError(f"evaluating {expression[:60]!r}: {result['exceptionDetails'].get('text')}")
        return result["result"].get("value")

    def screenshot(self, out: Path, *, width: int = 1100, dark: bool = False) -> None:
        """A PNG of the whole page at `width` CSS pixels, in the light or dark colour scheme."""
        self.call("Emulation.setEmulatedMedia", features=[{"name": "prefers-color-scheme",
                                                          "value": "dark" if dark else "light"}])
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=600, deviceScaleFactor=1, mobile=False)
        height = self.evaluate("document.documentElement.scrollHeight")  # laid out at `width`
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

        shot = self.call("Page.captureScreenshot", format="png", captureBeyondViewport=True)
        Path(out).write_bytes(base64.b64decode(shot["data"]))
        self.call("Emulation.clearDeviceMetricsOverride")
