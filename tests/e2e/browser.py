"""A headless Chromium driven through the Chrome DevTools protocol, for the end-to-end tests
of the built-in status page (test_dashboards.py).

The protocol runs over --remote-debugging-pipe (the browser reads commands on its fd 3 and
writes answers and events on its fd 4, one JSON object per message, NUL-terminated), so
nothing but the standard library is needed and no port is opened. The browser runs with
a throw-away profile and is registered with the harness's cleanup, so it never outlives the
test session.

Built on harness.py only; it changes nothing there."""

from __future__ import annotations

import base64
import fcntl
import json
import os
import shutil
import subprocess
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import harness

CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                  "--no-first-run", "--disable-background-networking",
                  "--disable-component-update", "--disable-sync", "--disable-extensions",
                  "--disable-default-apps", "--mute-audio", "--hide-scrollbars",
                  "--disable-features=Translate,MediaRouter,OptimizationHints",
                  "--remote-debugging-pipe"]


def chromium_path() -> str | None:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        p = shutil.which(name)
        if p:
            return p
    return None


def _high_fd(fd: int) -> int:
    """A duplicate of fd numbered 10 or more (non-inheritable); fd is closed."""
    high = fcntl.fcntl(fd, fcntl.F_DUPFD_CLOEXEC, 10)
    os.close(fd)
    return high


class CdpError(AssertionError):
    pass


class Browser:
    """One headless Chromium with one page (tab) attached in flat session mode."""

    def __init__(self, workdir: Path, width: int = 1280, height: int = 1000):
        exe = chromium_path()
        if exe is None:
            raise AssertionError("chromium is not installed (scripts/install-deps.sh installs it)")
        self.width, self.height = width, height
        self.profile = Path(tempfile.mkdtemp(prefix="chromium-", dir=workdir))
        self.log_path = Path(workdir) / "chromium.log"
        self._log = open(self.log_path, "wb")
        to_child_r, to_child_w = os.pipe()      # we write commands; the browser reads fd 3
        from_child_r, from_child_w = os.pipe()  # the browser writes fd 4; we read
        # the child's ends move above fd 9, so that putting them on 3 and 4 clobbers nothing
        to_child_r, from_child_w = (_high_fd(to_child_r), _high_fd(from_child_w))
        args = [exe, *CHROMIUM_FLAGS, f"--user-data-dir={self.profile}",
                f"--window-size={width},{height}", "about:blank"]
        # bash puts the pipe ends on fds 3 and 4, then becomes the browser
        script = (f'exec "$@" 3<&{to_child_r} 4>&{from_child_w} '
                  f'{to_child_r}<&- {from_child_w}>&-')
        self.proc = subprocess.Popen(["bash", "-c", script, "chromium", *args],
                                     stdin=subprocess.DEVNULL, stdout=self._log,
                                     stderr=subprocess.STDOUT,
                                     pass_fds=(to_child_r, from_child_w),
                                     start_new_session=True)
        os.close(to_child_r)
        os.close(from_child_w)
        self._wfd = to_child_w
        self._rfd = from_child_r
        harness.register_cleanup(self._cleanup)

        self._next_id = 0
        self._lock = threading.Lock()
        self._cond = threading.Condition(self._lock)
        self._answers: dict[int, dict] = {}
        self.events: list[dict] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read_loop, daemon=True)
        self._reader.start()

        targets = self.send("Target.getTargets")["targetInfos"]
        page = next((t for t in targets if t["type"] == "page"), None)
        if page is None:
            page = {"targetId": self.send("Target.createTarget", url="about:blank")["targetId"]}
        self.session = self.send("Target.attachToTarget", targetId=page["targetId"],
                                 flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            self.page(f"{domain}.enable")
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=False)

    # ---- the pipe
    def _read_loop(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._rfd, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cond:
                    self._closed = True
                    self._cond.notify_all()
                return
            buf += chunk
            while b"\0" in buf:
                raw, buf = buf.split(b"\0", 1)
                msg = json.loads(raw)
                with self._cond:
                    if "id" in msg:
                        self._answers[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                    self._cond.notify_all()

    def send(self, method: str, session: str | None = None, timeout: float = 60,
             **params) -> dict:
        with self._lock:
            self._next_id += 1
            mid = self._next_id
        msg: dict[str, Any] = {"id": mid, "method": method, "params": params}
        if session:
            msg["sessionId"] = session
        data = json.dumps(msg).encode() + b"\0"
        view = memoryview(data)
        while view:
            n = os.write(self._wfd, view)
            view = view[n:]
        deadline = time.monotonic() + harness.scaled(timeout)
        with self._cond:
            while mid not in self._answers:
                if self._closed:
                    raise CdpError(f"chromium closed the pipe during {method}:\n"
                                   f"{harness.tail(self.log_text())}")
                left = deadline - time.monotonic()
                if left <= 0:
                    raise CdpError(f"no answer to {method} within {harness.scaled(timeout):.0f}s")
                self._cond.wait(left)
            answer = self._answers.pop(mid)
        if "error" in answer:
            raise CdpError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    def page(self, method: str, timeout: float = 60, **params) -> dict:
        """A command to the page's session."""
        return self.send(method, session=self.session, timeout=timeout, **params)

    # ---- helpers
    def navigate(self, url: str, timeout: float = 60) -> None:
        mark = len(self.events)
        res = self.page("Page.navigate", url=url)
        if res.get("errorText"):
            raise CdpError(f"navigation to {url} failed: {res['errorText']}")
        self.wait_event("Page.loadEventFired", timeout, since=mark)

    def wait_event(self, method: str, timeout: float = 60, since: int = 0) -> dict:
        deadline = time.monotonic() + harness.scaled(timeout)
        with self._cond:
            while True:
                for ev in self.events[since:]:
                    if ev.get("method") == method:
                        return ev
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise CdpError(f"no {method} within {harness.scaled(timeout):.0f}s")
                self._cond.wait(left)

    def eval(self, expression: str, timeout: float = 60) -> Any:
        """Evaluates a JavaScript expression in the page (promises are awaited); its value."""
        res = self.page("Runtime.evaluate", timeout=timeout, expression=expression,
                        returnByValue=True, awaitPromise=True)
        if "exceptionDetails" in res:
            raise CdpError(f"JavaScript error in {expression[:200]!r}: {res['exceptionDetails']}")
        return res["result"].get("value")

    def wait_js(self, expression: str, timeout: float = 60, what: str | None = None) -> Any:
        """Polls a JavaScript expression until it is truthy; returns its value."""
        return harness.wait_for(lambda: self.eval(expression), timeout, interval=0.2,
                                what=what or expression)

    def type_text(self, text: str) -> None:
        """Types into the focused element, as a keyboard would."""
        self.page("Input.insertText", text=text)

    def press_enter(self) -> None:
        for kind in ("keyDown", "keyUp"):
            self.page("Input.dispatchKeyEvent", type=kind, key="Enter", code="Enter",
                      windowsVirtualKeyCode=13, nativeVirtualKeyCode=13,
                      **({"text": "\r"} if kind == "keyDown" else {}))

    def screenshot(self, path: Path, full_page: bool = True) -> Path:
        if full_page:
            m = self.page("Page.getLayoutMetrics")
            h = int(max(self.height, m.get("cssContentSize", m.get("contentSize"))["height"]))
            self.page("Emulation.setDeviceMetricsOverride", width=self.width, height=h,
                      deviceScaleFactor=1, mobile=False)
        data = self.page("Page.captureScreenshot", format="png")["data"]
        if full_page:
            self.page("Emulation.setDeviceMetricsOverride", width=self.width,
                      height=self.height, deviceScaleFactor=1, mobile=False)
        path = Path(path)
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def console_problems(self) -> list[str]:
        """JavaScript exceptions, and console or browser errors other than failed HTTP
        answers (a 401 is expected before a token is given)."""
        out = []
        with self._lock:
            events = list(self.events)
        for ev in events:
            m, p = ev.get("method"), ev.get("params", {})
            if m == "Runtime.exceptionThrown":
                out.append(f"exception: {p.get('exceptionDetails')}")
            elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
                out.append(f"console.{p['type']}: {p.get('args')}")
            elif m == "Log.entryAdded":
                e = p.get("entry", {})
                if e.get("level") == "error" and e.get("source") != "network":
                    out.append(f"{e.get('source')}: {e.get('text')}")
        return out

    def set_viewport(self, width: int, height: int, mobile: bool = False) -> None:
        self.width, self.height = width, height
        self.page("Emulation.setDeviceMetricsOverride", width=width, height=height,
                  deviceScaleFactor=1, mobile=mobile)

    def transfers(self, since: int = 0) -> list[tuple[str, int]]:
        """(url, bytes received for it, headers included) of each request that finished
        after event number `since`, in order."""
        with self._lock:
            events = list(self.events[since:])
        urls = {ev["params"]["requestId"]: ev["params"]["request"]["url"] for ev in events
                if ev.get("method") == "Network.requestWillBeSent"}
        return [(urls[ev["params"]["requestId"]], int(ev["params"]["encodedDataLength"]))
                for ev in events if ev.get("method") == "Network.loadingFinished"
                and ev["params"]["requestId"] in urls]

    def requested_urls(self) -> list[str]:
        with self._lock:
            return [ev["params"]["request"]["url"] for ev in self.events
                    if ev.get("method") == "Network.requestWillBeSent"]

    def log_text(self) -> str:
        try:
            return self.log_path.read_text(errors="replace")
        except OSError:
            return ""

    # ---- shutdown
    def close(self) -> None:
        try:
            if self.proc.poll() is None and not self._closed:
                self.send("Browser.close", timeout=10)
        except Exception:  # noqa: BLE001 - killed below
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait(timeout=10)
        self._cleanup()
        harness.unregister_cleanup(self._cleanup)

    def _cleanup(self) -> None:
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, 9)
            except OSError:
                self.proc.kill()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                pass
        reader = getattr(self, "_reader", None)
        if reader is not None and reader is not threading.current_thread():
            reader.join(timeout=5)  # the browser is gone: its pipe reached end of file
        for fd in (self._wfd, self._rfd):
            if fd < 0:
                continue
            try:
                os.close(fd)
            except OSError:
                pass
        self._wfd = self._rfd = -1
        if not self._log.closed:
            self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self) -> "Browser":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
