"""`evpnd run` and its state_dir: refused when someone else could control it; a full one
(ENOSPC) costs clear errors, never the daemon.

Each daemon runs in a throwaway network namespace; the small tmpfs lives in a
private mount namespace of the daemon's own (unshare), so it disappears with
the daemon whatever happens.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest

from evpnd import netns
from evpnd.control import client
from tests.conftest import require_program

pytestmark = pytest.mark.netns

CONFIG = """router_id: 192.0.2.11
asn: 65000
vtep: {{address: 192.0.2.11, device: eth0}}
state_dir: {state}
logging: {{level: info, format: json}}
control: {{socket: {socket}}}
bgp:
  eor_timeout: 1
  peers: [{{address: 192.0.2.99, remote_asn: 65000}}]
vnis:
  - vni: 100
    flood: static
    flood_peers: [192.0.2.21]
{extra}"""
EXTRA_VNI = """  - vni: 300
    flood: static
    flood_peers: [192.0.2.23]
"""


def underlay(ns: str) -> None:
    for cmd in ("ip link add eth0 type bridge", "ip addr add 192.0.2.11/24 dev eth0",
                "ip link set eth0 up"):  # fmt: skip
        netns.run(ns, cmd.split())


def floods(ns: str, dev: str) -> set[str]:
    out = netns.run(ns, ["bridge", "-j", "fdb", "show", "dev", dev], check=False).stdout
    return {e["dst"] for e in json.loads(out or "[]") if e["mac"] == "00:00:00:00:00:00"}


def link_exists(ns: str, dev: str) -> bool:
    return netns.run(ns, ["ip", "link", "show", dev], check=False).returncode == 0


def test_a_state_dir_another_user_owns_is_refused(ns: str, tmp_path: Path) -> None:
    underlay(ns)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    os.chown(state, 65534, 65534)
    cfg = tmp_path / "evpnd.yaml"
    cfg.write_text(CONFIG.format(state=state, socket=tmp_path / "c.sock", extra=""))
    done = subprocess.run(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "evpnd", "run", "-c", str(cfg)],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 1
    assert f"state_dir: state directory {state} is owned by uid 65534" in done.stderr
    assert list(state.iterdir()) == []  # not even the lock
    assert not link_exists(ns, "vxlan100")  # refused before touching anything


def test_a_full_state_dir_costs_errors_not_the_daemon(ns: str, tmp_path: Path) -> None:
    unshare = require_program("unshare", "util-linux")
    underlay(ns)
    state = tmp_path / "state"
    state.mkdir(mode=0o700)
    socket = tmp_path / "c.sock"
    cfg = tmp_path / "evpnd.yaml"
    cfg.write_text(CONFIG.format(state=state, socket=socket, extra=""))
    log = tmp_path / "evpnd.log"
    # A 64 KiB tmpfs over state_dir, filled before the daemon starts; the
    # control socket lives outside it (and outside the mount namespace).
    script = (f"mount -t tmpfs -o size=64k,mode=0700 evpnd-test {state} && "
              f"(dd if=/dev/zero of={state}/fill bs=4k 2>/dev/null; true) && "
              f"exec {sys.executable} -m evpnd run -c {cfg}")  # fmt: skip
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, unshare, "--mount", "--propagation", "private",
         "sh", "-c", script],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip

    def wait(check: Callable[[], bool], what: str) -> None:
        deadline = time.monotonic() + 30
        while not check():
            assert proc.poll() is None, f"evpnd exited: {log.read_text()[-3000:]}"
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}; log: {log.read_text()[-3000:]}")
            time.sleep(0.1)

    def status() -> dict:
        return client.request(socket, {"command": "show", "what": "status"}, 5.0)

    try:
        wait(lambda: floods(ns, "vxlan100") == {"192.0.2.21"}, "the flood list")
        # ExaBGP's files cannot be written: it is retried, and said so.
        wait(lambda: "No space left on device" in log.read_text(), "an ENOSPC error logged")
        wait(lambda: "could not start exabgp" in log.read_text(), "the speaker's error")
        assert status()["ok"]
        # A reload needs devices.json rewritten: that fails, the reload does not.
        cfg.write_text(CONFIG.format(state=state, socket=socket, extra=EXTRA_VNI))
        proc.send_signal(signal.SIGHUP)
        wait(lambda: floods(ns, "vxlan300") == {"192.0.2.23"}, "the new VNI after a reload")
        wait(lambda: "could not record owned devices" in log.read_text(), "the devices warning")
        time.sleep(2)  # past a few of the speaker's restart attempts
        assert proc.poll() is None
        response = status()
        assert response["ok"] and response["data"]["vnis"] == 2
        lines = [json.loads(line) for line in log.read_text().splitlines()
                 if line.startswith("{")]  # fmt: skip
        assert not [line for line in lines if line.get("event") == "task failed"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
