"""`evpnd run` as a process in a namespace: no-BGP flooding, reload, clean stop."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from evpnd import netns

pytestmark = pytest.mark.netns

CONFIG = """router_id: 192.0.2.11
asn: 65000
vtep: {{address: 192.0.2.11, device: eth0}}
state_dir: {state}
logging: {{level: debug, format: json}}
bgp: {{eor_timeout: 1}}
vnis:
  - vni: 100
    flood: static
    flood_peers: [192.0.2.21, 192.0.2.22]
{extra}"""

EXTRA_VNI = """  - vni: 300
    flood: static
    flood_peers: [192.0.2.23]
    vxlan: {ttl: 32}
"""


def wait_for(check: Callable[[], bool], timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.1)


def floods(ns: str, dev: str) -> set[str]:
    out = netns.run(ns, ["bridge", "-j", "fdb", "show", "dev", dev], check=False).stdout
    return {e["dst"] for e in json.loads(out or "[]") if e["mac"] == "00:00:00:00:00:00"}


def link_exists(ns: str, dev: str) -> bool:
    return netns.run(ns, ["ip", "link", "show", dev], check=False).returncode == 0


@pytest.fixture
def host(ns: str, tmp_path: Path) -> Iterator[tuple[str, Path, Path]]:
    netns.run(ns, ["ip", "link", "add", "eth0", "type", "veth", "peer", "name", "uplink"])
    netns.run(ns, ["ip", "addr", "add", "192.0.2.11/24", "dev", "eth0"])
    for dev in ("eth0", "uplink"):
        netns.run(ns, ["ip", "link", "set", dev, "up"])
    cfg = tmp_path / "evpnd.yaml"
    cfg.write_text(CONFIG.format(state=tmp_path / "state", extra=""))
    yield ns, cfg, tmp_path


def start(ns: str, cfg: Path, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", "evpnd", "run", "-c", str(cfg)],
        stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )


def test_static_flooding_reload_and_clean_stop(host: tuple[str, Path, Path]) -> None:
    ns, cfg, tmp = host
    log = tmp / "evpnd.log"
    proc = start(ns, cfg, log)
    try:
        wait_for(lambda: floods(ns, "vxlan100") == {"192.0.2.21", "192.0.2.22"})
        assert link_exists(ns, "br100")
        # It keeps running past its start-up timers (a one-shot timer ending
        # once stopped every daemon after 60 s).
        time.sleep(2.5)
        assert proc.poll() is None and "stopping" not in log.read_text()

        # SIGHUP applies a new VNI without a restart.
        cfg.write_text(CONFIG.format(state=tmp / "state", extra=EXTRA_VNI))
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: floods(ns, "vxlan300") == {"192.0.2.23"})
        assert proc.poll() is None

        # An invalid config on reload is refused; the daemon keeps running.
        cfg.write_text("router_id: nope\n")
        proc.send_signal(signal.SIGHUP)
        wait_for(lambda: "reload refused" in log.read_text())
        assert proc.poll() is None
        assert floods(ns, "vxlan300") == {"192.0.2.23"}

        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # Documented stop state: devices and owned entries stay for the next start.
    assert link_exists(ns, "vxlan100") and link_exists(ns, "vxlan300")
    assert floods(ns, "vxlan100") == {"192.0.2.21", "192.0.2.22"}


def test_restart_writes_nothing_and_removing_a_vni_removes_its_devices(
    host: tuple[str, Path, Path],
) -> None:
    ns, cfg, tmp = host
    cfg.write_text(CONFIG.format(state=tmp / "state", extra=EXTRA_VNI))
    for attempt in range(2):
        log = tmp / f"run{attempt}.log"
        proc = start(ns, cfg, log)
        try:
            wait_for(lambda log=log: "stale entries removed" in log.read_text())
            proc.send_signal(signal.SIGTERM)
            assert proc.wait(timeout=20) == 0
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    resync = [json.loads(line) for line in (tmp / "run1.log").read_text().splitlines()
              if '"dataplane resynced"' in line]
    assert resync and resync[0]["writes"] == 0, "a restart rewrote entries that were correct"

    cfg.write_text(CONFIG.format(state=tmp / "state", extra=""))
    log = tmp / "run2.log"
    proc = start(ns, cfg, log)
    try:
        wait_for(lambda: not link_exists(ns, "vxlan300"))
        assert link_exists(ns, "vxlan100")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=20) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
