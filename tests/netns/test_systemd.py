"""contrib/systemd/evpnd.service, and evpnd speaking systemd's notify protocol.

- The unit passes `systemd-analyze verify` (with the real evpnd at the unit's
  ExecStart path, in a private mount namespace) and `systemd-analyze security`
  keeps its exposure low; its commands are valid evpnd command lines.
- `evpnd run` in a network namespace, with `$NOTIFY_SOCKET` naming a datagram
  socket this test listens on (what systemd does): READY=1 only once the
  control socket listens and the VNI devices exist, sent by the daemon's own
  pid; STATUS lines as it converges; RELOADING=1 / READY=1 around `evpnd
  reload`, the refusal in STATUS; STOPPING=1 at SIGTERM. ExaBGP, its child,
  does not inherit the variable.

The unit itself running under a real systemd (start, reload, hand-over on
restart, stop) is tested in tests/docker/test_image.py, inside the image.
"""

from __future__ import annotations

import array
import json
import os
import re
import shlex
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from evpnd import cli, netns
from tests.conftest import REPO, require_program, require_root

UNIT = REPO / "contrib" / "systemd" / "evpnd.service"
DOCKER_DROP_IN = REPO / "contrib" / "systemd" / "evpnd-docker.conf"
EVPND = Path(sys.executable).parent / "evpnd"  # the console script of this checkout
WAIT = 30.0
MAX_EXPOSURE = 3.5  # systemd-analyze security's "overall exposure" (0 best .. 10)


# ---------------------------------------------------------------- the unit file


def unit_settings(text: str) -> dict[str, list[str]]:
    """KEY -> every value it is given (systemd units may repeat keys)."""
    out: dict[str, list[str]] = {}
    for line in text.splitlines():
        line = line.strip()
        if not line or line[0] in "#;[":
            continue
        key, _, value = line.partition("=")
        out.setdefault(key.strip(), []).append(value.strip())
    return out


def test_the_unit_says_what_the_hand_over_needs() -> None:
    settings = unit_settings(UNIT.read_text())
    assert settings["Type"] == ["notify"]
    # ExaBGP and the relay must survive the daemon's stop, and so must state_dir.
    assert settings["KillMode"] == ["process"]
    assert settings["RuntimeDirectory"] == ["evpnd"]
    assert settings["RuntimeDirectoryPreserve"] == ["yes"]
    assert settings["Restart"] == ["on-failure"]
    assert "CAP_NET_ADMIN" in settings["CapabilityBoundingSet"][0].split()
    assert "AF_NETLINK" in settings["RestrictAddressFamilies"][0].split()
    # Its commands are evpnd command lines: `run` and `reload`, the same config file.
    start = shlex.split(settings["ExecStart"][0])
    reload = shlex.split(settings["ExecReload"][0])
    parser = cli.build_parser()
    run_args, reload_args = parser.parse_args(start[1:]), parser.parse_args(reload[1:])
    assert run_args.command == "run" and reload_args.command == "reload"
    assert start[0] == reload[0] == "/opt/evpnd/bin/evpnd"  # the image's path too
    assert run_args.config == reload_args.config == cli.DEFAULT_CONFIG
    # A broken config fails the start before anything runs: `check-config` of that file.
    (check,) = (shlex.split(line) for line in settings["ExecStartPre"])
    check_args = parser.parse_args(check[1:])
    assert check[0] == start[0] and check_args.command == "check-config"
    assert check_args.file == run_args.config


def test_the_docker_drop_in_orders_evpnd_before_dockerd() -> None:
    settings = unit_settings(DOCKER_DROP_IN.read_text())
    assert settings == {"Before": ["docker.service"]}


def in_mount_namespace_with_evpnd(script: str) -> subprocess.CompletedProcess[str]:
    """Run `script` where /opt/evpnd/bin/evpnd is this checkout's evpnd: a private
    mount namespace with a tmpfs on /opt (nothing of the host's /opt is touched)."""
    require_root()
    unshare = require_program("unshare", "util-linux")
    setup = ("mount -t tmpfs evpnd-test /opt && mkdir -p /opt/evpnd/bin && "
             f"ln -s {shlex.quote(str(EVPND))} /opt/evpnd/bin/evpnd && ")
    return subprocess.run([unshare, "--mount", "--propagation", "private", "sh", "-c",
                           setup + script], capture_output=True, text=True, timeout=120)


def test_systemd_analyze_verify() -> None:
    analyze = require_program("systemd-analyze", "systemd")
    done = in_mount_namespace_with_evpnd(f"{analyze} verify {shlex.quote(str(UNIT))}")
    assert done.returncode == 0 and done.stdout + done.stderr == "", done


def test_systemd_analyze_verify_can_fail(tmp_path: Path) -> None:
    """The check above means something: a unit naming a missing program fails it."""
    analyze = require_program("systemd-analyze", "systemd")
    broken = tmp_path / "evpnd.service"
    broken.write_text(UNIT.read_text().replace("/opt/evpnd/bin/evpnd run",
                                               "/opt/evpnd/bin/evpnd-missing run"))
    done = in_mount_namespace_with_evpnd(f"{analyze} verify {shlex.quote(str(broken))}")
    assert done.returncode != 0 and "evpnd-missing" in done.stderr


def test_hardening_exposure() -> None:
    analyze = require_program("systemd-analyze", "systemd")
    done = in_mount_namespace_with_evpnd(
        f"{analyze} security --offline=yes {shlex.quote(str(UNIT))}")
    found = re.search(r"Overall exposure level for evpnd.service: ([\d.]+)", done.stdout)
    assert found, done
    assert float(found.group(1)) <= MAX_EXPOSURE, done.stdout


# ---------------------------------------------------------------- the notify protocol

CONFIG = """router_id: 192.0.2.11
asn: 65000
vtep: {{address: 192.0.2.11, device: eth0}}
state_dir: {state}
logging: {{level: info, format: json}}
bgp:
  eor_timeout: 1
  restart_hold: 0
  peers:
    - {{address: 192.0.2.99, remote_asn: 65000}}
vnis:
  - vni: 100
    flood: static
    flood_peers: [192.0.2.21]
{extra}"""

EXTRA_VNI = """  - vni: 300
    flood: static
    flood_peers: [192.0.2.23]
"""


@dataclass
class Notification:
    fields: dict[str, str]
    pid: int  # the sender, from the kernel (SCM_CREDENTIALS), as systemd checks it
    seen: dict[str, bool]  # facts checked the moment it arrived


class NotifyListener:
    """systemd's side: a datagram socket with SO_PASSCRED, at a path in the filesystem
    (an abstract name would not cross into the daemon's network namespace)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
        self.sock.setsockopt(socket.SOL_SOCKET, socket.SO_PASSCRED, 1)
        self.sock.bind(path)

    def next(self, timeout: float = WAIT, check: dict | None = None) -> Notification:
        self.sock.settimeout(timeout)
        data, ancillary, _, _ = self.sock.recvmsg(4096, socket.CMSG_SPACE(12))
        pid = -1
        for level, kind, payload in ancillary:
            if level == socket.SOL_SOCKET and kind == socket.SCM_CREDENTIALS:
                pid = array.array("i", payload[:12])[0]
        fields = dict(line.split("=", 1) for line in data.decode().splitlines())
        return Notification(fields, pid, {name: f() for name, f in (check or {}).items()})

    def until(self, key: str, timeout: float = WAIT, check: dict | None = None
              ) -> list[Notification]:
        """Every notification up to and including the first one that sets `key`."""
        got: list[Notification] = []
        deadline = time.monotonic() + timeout
        while True:
            got.append(self.next(max(0.1, deadline - time.monotonic()), check))
            if key in got[-1].fields:
                return got

    def close(self) -> None:
        self.sock.close()
        os.unlink(self.path)


@pytest.fixture
def listener() -> Iterator[NotifyListener]:
    directory = tempfile.mkdtemp(prefix="sdn-")  # short: sun_path is 108 bytes
    notify = NotifyListener(os.path.join(directory, "notify"))
    try:
        yield notify
    finally:
        notify.close()
        os.rmdir(directory)


def link_exists(ns: str, dev: str) -> bool:
    return netns.run(ns, ["ip", "link", "show", dev], check=False).returncode == 0


def evpnd(ns: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "evpnd", *args],
                          capture_output=True, text=True, timeout=120)


def test_notify_protocol(ns: str, tmp_path: Path, listener: NotifyListener) -> None:
    netns.run(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "uplink"])
    netns.run(ns, ["ip", "addr", "add", "192.0.2.11/24", "dev", "eth0"])
    for dev in ("eth0", "uplink"):
        netns.run(ns, ["ip", "link", "set", dev, "up"])
    state = tmp_path / "state"
    cfg = tmp_path / "evpnd.yaml"
    cfg.write_text(CONFIG.format(state=state, extra=""))
    control = state / "control.sock"
    env = {**os.environ, "NOTIFY_SOCKET": listener.path}
    log = tmp_path / "evpnd.log"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "evpnd", "run", "-c", str(cfg)],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env)
    at_ready = {"control socket": lambda: control.is_socket(),
                "vxlan100": lambda: link_exists(ns, "vxlan100"),
                "br100": lambda: link_exists(ns, "br100")}
    try:
        first = listener.until("READY", check=at_ready)
        ready = first[-1]
        assert len(first) == 1, "nothing is said before READY=1"
        assert ready.pid == proc.pid, "systemd (NotifyAccess=main) only hears the main pid"
        assert ready.seen == {"control socket": True, "vxlan100": True, "br100": True}
        # READY=1 once start-up converged: here when eor_timeout (1 s) passed.
        assert ready.fields["STATUS"] == "converged, 0 of 1 peers up, 1 VNI"
        converged = [ready]

        # ExaBGP, a child that outlives the daemon, must not speak for it.
        status = json.loads(evpnd(ns, "show", "status", "--json", "-c", str(cfg)).stdout)
        exabgp = status["speaker"]["pid"]
        environ = Path(f"/proc/{exabgp}/environ").read_bytes().split(b"\0")
        assert not any(v.startswith(b"NOTIFY_SOCKET=") for v in environ)
        assert any(v.startswith(b"EXABGP_ENVFILE=") for v in environ)  # it is ExaBGP's

        # A reload: RELOADING=1 (with the time it began), then READY=1.
        cfg.write_text(CONFIG.format(state=state, extra=EXTRA_VNI))
        before = time.monotonic_ns() // 1000
        done = evpnd(ns, "reload", "-c", str(cfg))
        assert (done.returncode, done.stdout) == (0, "reloaded\n"), done
        reload = listener.until("READY")
        assert [sorted(n.fields) for n in reload] == [
            ["MONOTONIC_USEC", "RELOADING", "STATUS"], ["READY", "STATUS"]]
        assert int(reload[0].fields["MONOTONIC_USEC"]) >= before  # CLOCK_MONOTONIC, in us
        assert reload[1].fields["STATUS"] == "converged, 0 of 1 peers up, 2 VNIs"
        assert link_exists(ns, "vxlan300")

        # A refused reload: READY=1 again (the daemon runs on), the refusal in STATUS.
        cfg.write_text(CONFIG.format(state=state, extra=EXTRA_VNI).replace(
            "asn: 65000\nvtep", "asn: 0\nvtep"))
        done = evpnd(ns, "reload", "--socket", str(control), "-c", str(cfg))
        assert done.returncode == 1 and "asn" in done.stderr, done
        refused = listener.until("READY")
        assert [sorted(n.fields) for n in refused] == [
            ["MONOTONIC_USEC", "RELOADING", "STATUS"], ["READY", "STATUS"]]
        assert refused[1].fields["STATUS"] == ("reload refused (the running config is kept, "
                                               "see the log); converged, 0 of 1 peers up, 2 VNIs")
        assert all(n.pid == proc.pid for n in [*converged, *reload, *refused])

        proc.send_signal(signal.SIGTERM)
        stopping = listener.until("STOPPING")
        assert stopping[-1].fields == {"STOPPING": "1", "STATUS": "stopping"}
        assert proc.wait(timeout=WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "Traceback" not in log.read_text()


def test_no_notify_socket_changes_nothing(ns: str, tmp_path: Path) -> None:
    """Without $NOTIFY_SOCKET (not under systemd) the daemon runs and stops as before."""
    netns.run(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "uplink"])
    netns.run(ns, ["ip", "addr", "add", "192.0.2.11/24", "dev", "eth0"])
    cfg = tmp_path / "evpnd.yaml"
    cfg.write_text(CONFIG.format(state=tmp_path / "state", extra="").replace(
        "  peers:\n    - {address: 192.0.2.99, remote_asn: 65000}\n", ""))
    env = {k: v for k, v in os.environ.items() if k != "NOTIFY_SOCKET"}
    log = tmp_path / "evpnd.log"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "evpnd", "run", "-c", str(cfg)],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"), env=env)
    try:
        deadline = time.monotonic() + WAIT
        while "stale entries removed" not in log.read_text():
            assert time.monotonic() < deadline and proc.poll() is None, log.read_text()
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=WAIT) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert "notification failed" not in log.read_text()
