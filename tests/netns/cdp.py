"""A headless Chromium in a lab node's network namespace, driven over the DevTools protocol.

Chromium (Debian's `chromium`) runs inside the node's namespace (`ip netns
exec`), so it reaches the lab's addresses and nothing else; the test talks
to it over the DevTools websocket with aiohttp's client, from an event loop
on a thread that has joined the same namespace (setns() moves only the
calling thread, and sockets created there stay there). No chromedriver and
no new Python dependency.

    with Browser.start("clab-evpn-ops-rr", tmp_path / "chromium") as browser:
        browser.open("http://10.0.2.2:9595/fabric")
        browser.wait_for("document.body.dataset.updates > 0")
        browser.evaluate("document.querySelectorAll('g.vtep').length")
        browser.screenshot(tmp_path / "fabric.png")
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import ctypes
import ctypes.util
import itertools
import json
import os
import shutil
import subprocess
import threading
import time
from collections.abc import Coroutine, Iterator
from pathlib import Path
from typing import Any, TypeVar

import aiohttp

T = TypeVar("T")
CLONE_NEWNET = 0x40000000
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
    "--disable-dev-shm-usage", "--remote-debugging-port=0", "--remote-debugging-address=127.0.0.1",
)  # fmt: skip
STEP_TIMEOUT = 30.0


class NetnsLoop:
    """An asyncio loop on its own thread, inside a network namespace."""

    def __init__(self, netns: str) -> None:
        self.loop = asyncio.new_event_loop()
        self._ready: asyncio.Future[None] | None = None
        self._error: BaseException | None = None
        started = threading.Event()
        self._thread = threading.Thread(target=self._main, args=(netns, started), daemon=True,
                                        name=f"netns-{netns}")  # fmt: skip
        self._thread.start()
        started.wait(10)
        if self._error is not None:
            raise self._error

    def _main(self, netns: str, started: threading.Event) -> None:
        try:
            libc = ctypes.CDLL(ctypes.util.find_library("c"), use_errno=True)
            fd = os.open(f"/run/netns/{netns}", os.O_RDONLY | os.O_CLOEXEC)
            try:
                if libc.setns(fd, CLONE_NEWNET) != 0:
                    err = ctypes.get_errno()
                    raise OSError(err, f"setns {netns}: {os.strerror(err)}")
            finally:
                os.close(fd)
        except BaseException as exc:
            self._error = exc
            started.set()
            return
        asyncio.set_event_loop(self.loop)
        started.set()
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float = STEP_TIMEOUT) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def close(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        if not self._thread.is_alive():
            self.loop.close()


class DevTools:
    """One DevTools websocket: commands with ids, answers matched to them."""

    def __init__(self, session: aiohttp.ClientSession, ws: aiohttp.ClientWebSocketResponse):
        self._session = session
        self._ws = ws
        self._ids = itertools.count(1)
        self._waiting: dict[int, asyncio.Future[dict[str, Any]]] = {}
        self._reader = asyncio.get_running_loop().create_task(self._read())

    @classmethod
    async def connect(cls, url: str) -> DevTools:
        session = aiohttp.ClientSession()
        try:
            ws = await session.ws_connect(url, max_msg_size=0)  # screenshots are large
        except BaseException:
            await session.close()
            raise
        return cls(session, ws)

    async def _read(self) -> None:
        async for message in self._ws:
            if message.type != aiohttp.WSMsgType.TEXT:
                continue
            data = json.loads(message.data)
            future = self._waiting.pop(data.get("id", -1), None)
            if future is not None and not future.done():
                future.set_result(data)
        for future in self._waiting.values():
            if not future.done():
                future.set_exception(ConnectionError("DevTools connection closed"))

    async def send(self, method: str, session: str | None = None, **params: Any) -> Any:
        ident = next(self._ids)
        future: asyncio.Future[dict[str, Any]] = asyncio.get_running_loop().create_future()
        self._waiting[ident] = future
        message: dict[str, Any] = {"id": ident, "method": method, "params": params}
        if session is not None:
            message["sessionId"] = session
        await self._ws.send_str(json.dumps(message))
        answer = await future
        if "error" in answer:
            raise RuntimeError(f"{method}: {answer['error']}")
        return answer.get("result", {})

    async def close(self) -> None:
        await self._ws.close()
        self._reader.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._reader
        await self._session.close()


class Browser:
    """A headless Chromium with one page, in a network namespace (blocking methods)."""

    def __init__(self, process: subprocess.Popen[bytes], loop: NetnsLoop, tools: DevTools,
                 page: str) -> None:  # fmt: skip
        self.process = process
        self._loop = loop
        self._tools = tools
        self._page = page

    @classmethod
    @contextlib.contextmanager
    def start(cls, netns: str, profile: Path, size: tuple[int, int] = (1100, 900),
              program: str | None = None) -> Iterator[Browser]:  # fmt: skip
        """Chromium with a fresh profile in `profile` (a new, empty directory), stopped at
        the end whatever happens."""
        chromium = program or shutil.which("chromium") or "chromium"
        profile.mkdir(parents=True)
        log = (profile.parent / f"{profile.name}.log").open("wb")
        process = subprocess.Popen(
            ["ip", "netns", "exec", netns, chromium, *FLAGS, f"--user-data-dir={profile}",
             "about:blank"],
            stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
        )  # fmt: skip
        loop: NetnsLoop | None = None
        tools: DevTools | None = None
        try:
            url = _devtools_url(profile, process)
            loop = NetnsLoop(netns)
            tools = loop.run(DevTools.connect(url))
            page = loop.run(_new_page(tools, size))
            yield cls(process, loop, tools, page)
        finally:
            if tools is not None and loop is not None:
                with contextlib.suppress(Exception):
                    loop.run(tools.send("Browser.close"), timeout=5)
                with contextlib.suppress(Exception):
                    loop.run(tools.close(), timeout=5)
            if loop is not None:
                loop.close()
            _stop(process)
            log.close()

    def evaluate(self, expression: str) -> Any:
        """A JavaScript expression's value (awaited if it is a promise), as JSON."""
        result = self._loop.run(self._tools.send(
            "Runtime.evaluate", self._page, expression=expression, returnByValue=True,
            awaitPromise=True))  # fmt: skip
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str) -> None:
        self._loop.run(self._tools.send("Page.navigate", self._page, url=url))

    def wait_for(self, expression: str, timeout: float = 30.0, what: str = "") -> Any:
        """Until the expression is truthy; its value. TimeoutError naming it otherwise."""
        deadline = time.monotonic() + timeout
        last: Any = None
        while time.monotonic() < deadline:
            with contextlib.suppress(RuntimeError):  # the page may be between two documents
                last = self.evaluate(expression)
                if last:
                    return last
            time.sleep(0.2)
        raise TimeoutError(f"{what or expression}: still {last!r} after {timeout:.0f}s")

    def screenshot(self, path: Path) -> Path:
        data = self._loop.run(self._tools.send("Page.captureScreenshot", self._page,
                                               format="png", captureBeyondViewport=True))
        path.write_bytes(base64.b64decode(data["data"]))
        return path


async def _new_page(tools: DevTools, size: tuple[int, int]) -> str:
    target = await tools.send("Target.createTarget", url="about:blank")
    attached = await tools.send("Target.attachToTarget", targetId=target["targetId"],
                                flatten=True)  # fmt: skip
    page = str(attached["sessionId"])
    await tools.send("Page.enable", page)
    await tools.send("Emulation.setDeviceMetricsOverride", page, width=size[0], height=size[1],
                     deviceScaleFactor=1, mobile=False)  # fmt: skip
    return page


def _devtools_url(profile: Path, process: subprocess.Popen[bytes], timeout: float = 30) -> str:
    """Chromium writes its DevTools port and browser path to DevToolsActivePort."""
    marker = profile / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"chromium exited with {process.returncode} (log: "
                               f"{profile.parent / (profile.name + '.log')})")  # fmt: skip
        with contextlib.suppress(OSError, ValueError):
            port, path = marker.read_text().split("\n")[:2]
            if port and path:
                return f"ws://127.0.0.1:{int(port)}{path}"
        time.sleep(0.1)
    raise TimeoutError(f"chromium wrote no {marker} in {timeout:.0f}s")


def _stop(process: subprocess.Popen[bytes]) -> None:
    """Chromium and its helpers: the session it leads (ip netns exec execs chromium)."""
    if process.poll() is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, 15)
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, 9)
            process.wait(10)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, 9)  # helpers (renderer, zygote) left behind
