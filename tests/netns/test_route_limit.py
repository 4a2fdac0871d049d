"""A peer past its route limit, against FRR 8.4.4: refused, torn down, held down, retried.

`evpnd run` in one namespace peers with FRR (test_speaker.py's lab) and allows
it 20 routes. FRR's bridge learns 40 MACs, so FRR advertises 40 Type-2 routes
(and its Type-3): evpnd installs 20, refuses the rest, closes the session with
a NOTIFICATION Cease / Maximum Number of Prefixes Reached (RFC 4486; graceful
restart is off here: with it negotiated ExaBGP 5.0.15 closes without any
NOTIFICATION), keeps FRR out for `max_routes_restart` seconds although FRR
keeps trying, then lets the session come back, and tears it down again since
FRR still sends too much.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.netns import test_speaker
from tests.netns.test_speaker import ASN, FRR_IP, SPEAKER_IP, VNI, FrrLab, sh

pytestmark = pytest.mark.netns
frr_lab = test_speaker.frr_lab  # the fixture: FRR and the speaker's namespace

LIMIT = 20
MACS = [f"02:04:00:00:00:{i:02x}" for i in range(40)]
HOLD = 6  # seconds FRR is kept out after a teardown

CONFIG = f"""router_id: {SPEAKER_IP}
asn: {ASN}
vtep: {{address: {SPEAKER_IP}, device: e0}}
state_dir: {{state}}
logging: {{level: info, format: json}}
bgp:
  graceful_restart: 0
  eor_timeout: 5
  peers:
    - address: {FRR_IP}
      remote_asn: {ASN}
      hold_time: 9
      max_routes: {LIMIT}
      max_routes_warning: 50
      max_routes_action: teardown
      max_routes_restart: {HOLD}
vnis:
  - vni: {VNI}
"""


LOG: list[Path] = []  # the running daemon's log, for failure messages


def wait_for(what: str, check: Callable[[], Any], timeout: float = 60) -> Any:
    deadline = time.monotonic() + timeout
    while True:
        found = check()
        if found:
            return found
        if time.monotonic() >= deadline:
            tail = "\n".join(LOG[-1].read_text().splitlines()[-15:]) if LOG else ""
            pytest.fail(f"timed out waiting for {what}\n{tail}", pytrace=False)
        time.sleep(0.2)


@pytest.fixture
def daemon(frr_lab: FrrLab) -> Iterator[tuple[Path, Path]]:
    state = Path(tempfile.mkdtemp(prefix="evrl-"))
    config = state / "evpnd.yaml"
    config.write_text(CONFIG.replace("{state}", str(state / "run")))
    log = state / "evpnd.log"
    LOG.append(log)
    proc = subprocess.Popen(
        ["ip", "netns", "exec", frr_lab.speaker_ns, sys.executable, "-m", "evpnd", "run",
         "-c", str(config)], stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip
    try:
        yield state / "run" / "control.sock", log
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        shutil.rmtree(state, ignore_errors=True)


def show_peer(socket: Path, ns: str) -> dict[str, Any] | None:
    out = subprocess.run(["ip", "netns", "exec", ns, sys.executable, "-m", "evpnd", "show",
                          "peers", "--json", "--socket", str(socket)],
                         capture_output=True, text=True, timeout=30)  # fmt: skip
    if out.returncode != 0:
        return None
    [peer] = json.loads(out.stdout)["peers"]
    return peer


def frr_neighbor(frr_lab: FrrLab) -> dict[str, Any]:
    shown = frr_lab.vtysh_sync(f"show bgp neighbors {SPEAKER_IP} json") or {}
    return shown.get(SPEAKER_IP, {})


def test_a_peer_past_its_limit_is_refused_torn_down_held_down_and_retried(
    frr_lab: FrrLab, daemon: tuple[Path, Path]
) -> None:
    socket, log = daemon
    ns = frr_lab.speaker_ns
    wait_for("the session", lambda: (show_peer(socket, ns) or {}).get("state") == "established")
    sh(frr_lab.frr_ns, "ip", "link", "add", "h0", "type", "veth", "peer", "name", "h0p")
    sh(frr_lab.frr_ns, "ip", "link", "set", "h0", "master", f"br{VNI}", "up")
    sh(frr_lab.frr_ns, "ip", "link", "set", "h0p", "up")
    batch = frr_lab.frr_dir / "fdb.batch"
    batch.write_text("".join(f"fdb add {mac} dev h0 master static\n" for mac in MACS))
    sh(frr_lab.frr_ns, "bridge", "-batch", str(batch))

    # Refused past the limit, then the session closed with Cease/1.
    peer = wait_for("evpnd to hold FRR down", lambda: (p := show_peer(socket, ns))
                    and p["route_limit"]["held_down_for"] is not None and p)  # fmt: skip
    # (The level is "ok" again: the peer's routes went with the session.)
    assert peer["route_limit"]["refused"] > 0 and peer["route_limit"]["exceeded_count"] == 1
    assert peer["route_limit"]["max_routes"] == LIMIT
    frr = wait_for("FRR to see the session closed",
                   lambda: (n := frr_neighbor(frr_lab)).get("connectionsDropped") and n)
    reset = json.dumps(frr)
    assert "Maximum Number of Prefixes Reached" in reset, {
        k: v for k, v in frr.items() if "eset" in k or "otif" in k}  # fmt: skip
    assert "peer route limit exceeded" in log.read_text(), log.read_text()[-2000:]
    # Held down: FRR keeps trying to connect, nobody answers for HOLD seconds.
    time.sleep(HOLD / 3)
    held = show_peer(socket, ns)
    assert held is not None and held["state"] != "established"
    assert held["route_limit"]["held_down_for"] is not None
    assert frr_neighbor(frr_lab).get("connectionsDropped") == 1
    assert held["routes_received"] == 0  # its routes went with the session
    # After the hold-down the session comes back, and FRR, still sending too much,
    # is torn down a second time.
    wait_for("the second teardown", lambda: frr_neighbor(frr_lab).get("connectionsDropped", 0) >= 2,
             timeout=HOLD + 60)  # fmt: skip
    again = wait_for("the second hold-down", lambda: (p := show_peer(socket, ns))
                     and p["route_limit"]["exceeded_count"] == 2 and p)  # fmt: skip
    print(f"\nroute limit {LIMIT}, {len(MACS)} MACs from FRR: refused "
          f"{again['route_limit']['refused']} routes over two sessions, torn down twice "
          f"({HOLD} s apart at least)")
