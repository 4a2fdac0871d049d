"""A private dockerd, an offline busybox image and the evpnd plugin, for tests/docker.

The dockerd is the test's own: its own --data-root, --exec-root, --pidfile and
API socket under a temporary directory, no default bridge, no iptables. Only
that process (and what it started) is stopped at the end; a system dockerd,
if one runs, is never touched. The plugin is announced to it by a spec file
`/etc/docker/plugins/<unique name>.spec` pointing at a socket in the
temporary directory (dockerd only looks for plugins in the system places),
removed at the end.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import secrets
import shutil
import signal
import subprocess
import tarfile
import tempfile
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from evpnd.config import Config, parse
from evpnd.docker.driver import EndpointInfo, VniInfo
from evpnd.docker.kernel import NetlinkKernel
from evpnd.docker.server import write_spec
from evpnd.docker.service import DockerPlugin
from evpnd.docker.settings import DockerConfig
from tests.conftest import IN_CI, require, require_program, require_root

SPEC_DIR = Path("/etc/docker/plugins")
APPLETS = ("sh", "ip", "ping", "sleep", "cat", "ls", "ifconfig", "true")
WAIT = 60.0


def ensure_packages() -> None:
    """Debian's docker.io and busybox-static, installed when missing (root only)."""
    missing = [p for p, prog in (("docker.io", "/usr/sbin/dockerd"),
                                 ("busybox-static", "/usr/bin/busybox"))
               if not os.path.exists(prog)]
    if missing and os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "install", "-y", "-qq", *missing], env=env,
                       capture_output=True, timeout=600, check=False)


def docker_client() -> str:
    # Debian's client matches its dockerd (API 1.41); /usr/local/bin may hold another.
    return "/usr/bin/docker" if os.path.exists("/usr/bin/docker") else require_program(
        "docker", "docker.io")


@dataclass
class Dockerd:
    root: Path
    client: str
    process: subprocess.Popen[bytes]
    socket: Path  # its API socket (root/docker.sock unless the test chose a place)

    @property
    def host(self) -> str:
        return f"unix://{self.socket}"

    def run(
        self, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        done = subprocess.run([self.client, "-H", self.host, *args], capture_output=True,
                              text=True, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"docker {' '.join(args)} failed ({done.returncode}):\n"
                                 f"{done.stdout}{done.stderr}\n--- dockerd log tail:\n"
                                 f"{self.log_tail()}")
        return done

    def inspect(self, *args: str) -> Any:
        return json.loads(self.run("inspect", *args).stdout)

    def log_tail(self, lines: int = 30) -> str:
        with contextlib.suppress(OSError):
            return "\n".join((self.root / "dockerd.log").read_text().splitlines()[-lines:])
        return ""


def _umount_under(root: Path) -> None:
    mounts = [line.split()[1] for line in Path("/proc/mounts").read_text().splitlines()]
    for target in sorted((m for m in mounts if m.startswith(str(root))), reverse=True):
        subprocess.run(["umount", "-l", target], capture_output=True, check=False)


@contextlib.contextmanager
def launch_dockerd(netns: str | None = None, api_socket: Path | None = None) -> Iterator[Dockerd]:
    """A private dockerd (in network namespace `netns` when given), stopped and wiped after.

    `api_socket`: where its API listens (an evpnd's `docker.dockerd_socket` in a lab);
    default `<its temporary root>/docker.sock`."""
    require_root()
    ensure_packages()
    binary = require_program("dockerd", "docker.io")
    require_program("busybox", "busybox-static")
    client = docker_client()
    root = Path(tempfile.mkdtemp(prefix="evd-"))  # short: socket paths live below it
    socket = api_socket or root / "docker.sock"
    socket.parent.mkdir(parents=True, exist_ok=True)
    # Its own daemon.json and trust key too: nothing under /etc/docker is read or written.
    # (dockerd 20.10 takes the key path only from a config file.)
    (root / "daemon.json").write_text(json.dumps({"deprecated-key-path": str(root / "key.json")}))
    cmd = [binary, "--config-file", str(root / "daemon.json"),
           "--data-root", str(root / "data"), "--exec-root", str(root / "exec"),
           "--pidfile", str(root / "dockerd.pid"), "-H", f"unix://{socket}",
           "--bridge=none", "--iptables=false", "--ip6tables=false", "--ip-masq=false"]
    if netns is not None:
        # Only the network namespace: mounts stay visible for the cleanup below.
        cmd = ["nsenter", f"--net=/run/netns/{netns}", *cmd]
    with open(root / "dockerd.log", "wb") as log:
        process = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    daemon = Dockerd(root, client, process, socket)
    try:
        deadline = time.monotonic() + WAIT
        while True:
            if process.poll() is not None:
                pytest.fail(f"dockerd exited with {process.returncode}:\n{daemon.log_tail()}")
            if daemon.run("version", check=False, timeout=10).returncode == 0:
                break
            if time.monotonic() > deadline:
                pytest.fail(f"dockerd not answering after {WAIT:.0f} s:\n{daemon.log_tail()}")
            time.sleep(0.2)
        yield daemon
    finally:
        with contextlib.suppress(Exception):
            ids = daemon.run("ps", "-aq", check=False, timeout=30).stdout.split()
            if ids:
                daemon.run("rm", "-f", *ids, check=False, timeout=60)
        process.send_signal(signal.SIGTERM)  # only the dockerd this fixture started
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        _umount_under(root)
        shutil.rmtree(root, ignore_errors=True)
        if api_socket is not None:
            api_socket.unlink(missing_ok=True)


@pytest.fixture(scope="session")
def dockerd() -> Iterator[Dockerd]:
    with launch_dockerd() as daemon:
        yield daemon


def import_image(dockerd: Dockerd) -> str:
    """An offline image: a rootfs of Debian's busybox-static, via `docker import`."""
    name = "evpnd-busybox:test"
    rootfs = dockerd.root / "rootfs"
    if not rootfs.exists():
        (rootfs / "bin").mkdir(parents=True)
        (rootfs / "tmp").mkdir()
        shutil.copy2("/usr/bin/busybox", rootfs / "bin" / "busybox")
        for applet in APPLETS:
            (rootfs / "bin" / applet).symlink_to("busybox")
    tar = dockerd.root / "rootfs.tar"
    with tarfile.open(tar, "w") as archive:
        archive.add(rootfs, arcname=".")
    dockerd.run("import", str(tar), name)
    return name


@pytest.fixture(scope="session")
def image(dockerd: Dockerd) -> str:
    return import_image(dockerd)


# ---------------------------------------------------------------------------
# The plugin, on its own event loop in a thread (the test drives the docker CLI)


@dataclass
class Event:
    kind: str
    info: Any
    rx_packets: int | None = None  # of the host veth when the endpoint was reported


@dataclass
class Recorder:
    events: list[Event] = field(default_factory=list)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def add(self, event: Event) -> None:
        with self.lock:
            self.events.append(event)

    def of(self, kind: str) -> list[Any]:
        with self.lock:
            return [e for e in self.events if e.kind == kind]

    async def vni_added(self, info: VniInfo) -> None:
        self.add(Event("vni_added", info))

    async def vni_removed(self, info: VniInfo) -> None:
        self.add(Event("vni_removed", info))

    async def endpoint_added(self, info: EndpointInfo) -> None:
        # What the container has sent so far: its traffic arrives as rx on the host end.
        stats = Path(f"/sys/class/net/{info.port}/statistics/rx_packets")
        rx = int(stats.read_text()) if stats.exists() else None  # None: in another netns
        self.add(Event("endpoint_added", info, rx))

    async def endpoint_removed(self, info: EndpointInfo) -> None:
        self.add(Event("endpoint_removed", info))


class FaultyKernel(NetlinkKernel):
    """The real kernel, with a switch to make the next veth creation fail."""

    fail_veth: str | None = None

    async def add_veth(self, host: str, peer: str, **kwargs: Any) -> None:
        if self.fail_veth is not None:
            message, self.fail_veth = self.fail_veth, None
            from evpnd.docker.driver import DriverError

            raise DriverError(message)
        await super().add_veth(host, peer, **kwargs)


class PluginThread:
    """DockerPlugin served from a background thread; `restart()` = a new evpnd process."""

    def __init__(self, name: str, root: Path, host: Config, netns: str | None = None,
                 dockerd_socket: Path | None = None) -> None:
        self.netns = netns
        # The test's own dockerd (never the system's), read when the state file is lost.
        self.settings = DockerConfig(enabled=True, plugin=name, socket_dir=root,
                                     state_dir=root / "state",
                                     dockerd_socket=dockerd_socket or root / "no-dockerd.sock")
        self.host = host
        self.recorder = Recorder()
        self.fabric: Any = None  # a FabricView the test sets (no daemon: nothing is claimed)
        self.plugin: DockerPlugin | None = None
        self.loop: asyncio.AbstractEventLoop | None = None
        self.thread: threading.Thread | None = None

    def call(self, coro: Any, timeout: float = WAIT) -> Any:
        assert self.loop is not None
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def start(self) -> None:
        self.recorder = Recorder()
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        plugin = DockerPlugin(self.settings, host=lambda: self.host, listener=self.recorder,
                              netns=self.netns, fabric=self.fabric)
        plugin.kernel = FaultyKernel(self.netns, self.settings.state_dir)
        plugin.driver.kernel = plugin.kernel
        self.plugin = plugin
        self.call(plugin.start())

    def stop(self) -> None:
        if self.plugin is not None and self.loop is not None:
            with contextlib.suppress(Exception):
                self.call(self.plugin.stop())
            self.loop.call_soon_threadsafe(self.loop.stop)
            assert self.thread is not None
            self.thread.join(timeout=10)
            self.loop.close()
        self.plugin = None

    def restart(self) -> None:
        self.stop()
        self.start()

    @property
    def kernel(self) -> FaultyKernel:
        assert self.plugin is not None
        return self.plugin.kernel  # type: ignore[return-value]


HOST = """
router_id: 127.0.0.1
asn: 65000
vtep: {address: 127.0.0.1, device: lo}
"""


@contextlib.contextmanager
def serve_plugin(dockerd: Dockerd, host: Config,
                 netns: str | None = None) -> Iterator[PluginThread]:
    """The driver under a unique name, announced to `dockerd` by a spec file; all undone after."""
    name = f"evpndt{secrets.token_hex(3)}"
    root = dockerd.root / name
    root.mkdir()
    thread = PluginThread(name, root, host, netns, dockerd.socket)
    spec = None
    spec_dir_existed = SPEC_DIR.exists()
    try:
        thread.start()
        spec = write_spec(SPEC_DIR, name, thread.settings.socket_path)
        yield thread
    finally:
        # A test that failed half-way: first let dockerd undo it through the plugin,
        # while the plugin still runs...
        with contextlib.suppress(Exception):
            for net in dockerd.run("network", "ls", "-q", "--filter", f"driver={name}",
                                   check=False).stdout.split():
                attached = dockerd.run("network", "inspect", "-f",
                                       "{{range $id, $c := .Containers}}{{$id}} {{end}}", net,
                                       check=False).stdout.split()
                if attached:
                    dockerd.run("rm", "-f", *attached, check=False)
                dockerd.run("network", "rm", net, check=False)
        thread.stop()
        # ... then whatever is still marked as the plugin's goes by hand.
        _remove_leftovers(thread)
        if spec is not None:
            spec.unlink(missing_ok=True)
        if not spec_dir_existed:
            with contextlib.suppress(OSError):
                SPEC_DIR.rmdir()  # we created it; only when empty


def _remove_leftovers(thread: PluginThread) -> None:
    prefix = ["ip", "netns", "exec", thread.netns] if thread.netns else []
    mark = f"evpnd:docker={thread.settings.plugin}:"
    vnis: set[int] = set()
    with contextlib.suppress(Exception):
        state = json.loads((thread.settings.state_dir /
                            f"docker-{thread.settings.plugin}.json").read_text())
        vnis = {net["vni"]["vni"] for net in state["networks"]}
    listing = subprocess.run([*prefix, "ip", "-d", "-j", "link", "show"], capture_output=True,
                             text=True, check=False).stdout or "[]"
    for link in json.loads(listing):
        alias = link.get("ifalias") or ""
        if alias.startswith(mark) or alias in {f"evpnd:vni={v}" for v in vnis}:
            subprocess.run([*prefix, "ip", "link", "del", link["ifname"]], capture_output=True,
                           check=False)


@pytest.fixture
def plugin(dockerd: Dockerd) -> Iterator[PluginThread]:
    with serve_plugin(dockerd, parse(HOST)) as thread:
        yield thread


def wait_for(what: str, check: Any, timeout: float = WAIT, interval: float = 0.2) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        value = check()
        if value:
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout:.0f} s waiting for {what}")
        time.sleep(interval)


__all__ = ["IN_CI", "Dockerd", "PluginThread", "require", "wait_for"]
