"""Canary: FRR 8.4.4 does not interoperate with an evpnd VTEP over an IPv6 underlay.

This is a canary, not a feature test. It proves the reason docs/interop.md
gives for its "FRR over an IPv6 underlay: does not work" row: FRR 8.4.4's bgpd takes
an ingress-replication PMSI tunnel attribute only at 9 bytes, an IPv4 tunnel
endpoint (`bgp_attr_pmsi_tunnel` in bgpd/bgp_attr.c: "Bad PMSI tunnel
attribute length %d for IR", then `bgp_attr_malformed` with
BGP_NOTIFY_UPDATE_ATTR_LENG_ERR). An IPv6 VTEP's Type-3 route carries the
21-byte attribute RFC 6514 section 5 lays out (flags, type, label, a 16-byte
endpoint), so FRR answers it with NOTIFICATION 3/5 and the session resets
over and over. And FRR's zebra takes a vxlan device whose `local` is IPv6 as
VTEP 0.0.0.0.

If this test fails because FRR accepts the route (no PMSI complaint, the
session stays Established, FRR holds evpnd's Type-3), FRR has been fixed:
make the IPv6-underlay interop row of docs/interop.md a working one, with a
real fabric test, and retire this canary. The
same if the zebra test fails because zebra shows the IPv6 `local` as the VTEP.

The lab is two namespaces written here on the fly: `frr` (host FRR 8.4.4:
zebra, staticd, bgpd; an FRR VTEP with advertise-all-vni and an IPv6-local
vxlan100) and `evpnd` (this checkout's `evpnd run`, VTEP and iBGP session
IPv6, VNI 100), joined by one veth. Addresses are in 2001:db8::/32 and
192.0.2.0/24 (documentation ranges) and exist only in the namespaces.
"""

from __future__ import annotations

import json
import re
import secrets
import shutil
import tempfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from evpnd.lab import state as labstate
from tests.netns import fabric
from tests.netns.fabric import Fabric, T, running_lab

pytestmark = pytest.mark.netns

FRR_ADDRESS = "2001:db8:0:1::1"  # FRR's end of the link, its session and its vxlan `local`
HOST_VTEP = "2001:db8:0:1::2"  # evpnd's VTEP and session address
FRR_ROUTER_ID = "192.0.2.1"
EVPND_CONFIG = "/etc/evpnd/evpnd.yaml"
PMSI_COMPLAINT = "Bad PMSI tunnel attribute length 21 for IR"
# bgpd with `bgp log-neighbor-changes` logs each session change and NOTIFICATION:
#   %ADJCHANGE: neighbor 2001:db8:0:1::2(Unknown) in vrf default Up
#   %NOTIFICATION: sent to neighbor 2001:db8:0:1::2 3/5 (UPDATE Message Error/Attribute
#   Length Error) 24 bytes c0 16 15 00 06 00 00 64
SESSION_UP = re.compile(rf"%ADJCHANGE: neighbor {re.escape(HOST_VTEP)}\(.*\) in vrf \S+ Up$")
NOTIFICATION_SENT = re.compile(
    rf"%NOTIFICATION: sent to neighbor {re.escape(HOST_VTEP)} (\d+)/(\d+) \(.*\) \d+ bytes ?(.*)$"
)
# UPDATE Message Error / Attribute Length Error (RFC 4271 section 6.3), its data
# the offending attribute: flags c0, type 0x16 (22, PMSI tunnel), length 0x15
# (21), tunnel flags 00, tunnel type 06 (ingress replication).
PMSI_NOTIFICATION = (3, 5, "c0 16 15 00 06")
TIMEOUT = 40.0

TOPOLOGY = """\
name: {lab}
topology:
  defaults:
    kind: linux
  nodes:
    frr:
      image: quay.io/frrouting/frr:8.4.4
      binds:
        - frr/frr.conf:/etc/frr/frr.conf
        - frr/daemons:/etc/frr/daemons
      sysctls:
        # eth1's link-local address usable at once: without it bgpd's first
        # connects fail on it ("nexthop_set failed", NOTIFICATION 5/0)
        net.ipv6.conf.all.accept_dad: 0
        net.ipv6.conf.default.accept_dad: 0
      exec:
        - ip -6 addr add {frr}/64 dev eth1 nodad
        - ip link add br100 type bridge
        - ip link add vxlan100 type vxlan id 100 dstport 4789 local {frr} dev eth1 nolearning
        - ip link set vxlan100 master br100 addrgenmode none
        - ip link set vxlan100 type bridge_slave neigh_suppress off learning off
        - ip link set vxlan100 up
        - ip link set br100 up
    evpnd:
      image: evpnd:latest
      binds:
        - evpnd/evpnd.yaml:/etc/evpnd/evpnd.yaml:ro
      exec:
        - ip -6 addr add {host}/64 dev eth1 nodad
  links:
    - endpoints: ["frr:eth1", "evpnd:eth1"]
"""

FRR_CONF = """\
frr version 8.4.4
frr defaults traditional
hostname frr
!
router bgp 65000
 bgp router-id {frr_id}
 no bgp default ipv4-unicast
 bgp log-neighbor-changes
 neighbor {host} remote-as 65000
 neighbor {host} timers 3 9
 neighbor {host} timers connect 5
 !
 address-family l2vpn evpn
  neighbor {host} activate
  advertise-all-vni
 exit-address-family
exit
!
"""

FRR_DAEMONS = "bgpd=yes\n"  # zebra and staticd always run

EVPND_YAML = """\
router_id: 192.0.2.2
asn: 65000
vtep:
  address: {host}
  device: eth1
bgp:
  peers:
    - address: {frr}
      remote_asn: 65000
      hold_time: 9
vnis:
  - vni: 100
    bridge: br100
state_dir: {state_dir}
logging:
  level: info
  format: json
"""


@dataclass(frozen=True)
class Lab:
    fabric: Fabric
    bgpd_log: Path

    def vtysh_json(self, command: str) -> Any:
        out = self.fabric.run("frr", ["vtysh", "-c", f"{command} json"]).stdout
        try:
            return json.loads(out) if out.strip() else {}
        except json.JSONDecodeError:
            return {}

    def neighbor(self) -> dict[str, Any]:
        """FRR's `show bgp neighbors <evpnd> json` entry ({} before bgpd knows it)."""
        shown = self.vtysh_json(f"show bgp neighbors {HOST_VTEP}")
        return shown.get(HOST_VTEP, {}) if isinstance(shown, dict) else {}

    def bgpd_log_text(self) -> str:
        try:
            return self.bgpd_log.read_text(errors="replace")
        except OSError:
            return ""

    def sessions(self) -> list[list[str]]:
        """bgpd's log cut at each time the session with evpnd came up: one list per session."""
        sessions: list[list[str]] = []
        for line in self.bgpd_log_text().splitlines():
            if SESSION_UP.search(line):
                sessions.append([])
            elif sessions:
                sessions[-1].append(line)
        return sessions

    def evpnd_peer(self) -> dict[str, Any]:
        out = self.fabric.run("evpnd", ["evpnd", "show", "peers", "--json", "-c", EVPND_CONFIG])
        if out.returncode != 0 or not out.stdout.strip():
            return {}
        rows = json.loads(out.stdout).get("peers", [])
        return next((r for r in rows if r["address"] == FRR_ADDRESS), {})

    def diagnostics(self) -> str:
        bgpd_tail = "\n".join(self.bgpd_log_text().splitlines()[-20:])
        return "\n".join([
            f"--- {self.bgpd_log} (last lines)\n{bgpd_tail}",
            self.fabric.log_tail("evpnd", lines=15),
            f"--- FRR neighbor: {json.dumps(self.neighbor())[:2000]}",
        ])  # fmt: skip

    def wait_for(self, what: str, probe: Callable[[], T | None]) -> T:
        return fabric.wait_for(what, probe, TIMEOUT, explain=self.diagnostics)


def write_lab(directory: Path, lab: str) -> Path:
    """The topology, its bound configs (readable by user frr: bgpd drops to it) and
    evpnd's state directory, all in `directory`, which the fixture removes."""
    values = {"lab": lab, "frr": FRR_ADDRESS, "host": HOST_VTEP, "frr_id": FRR_ROUTER_ID,
              "state_dir": directory / "evpnd-state"}  # fmt: skip
    files = {
        "lab.clab.yml": TOPOLOGY.format(**values),
        "frr/frr.conf": FRR_CONF.format(**values),
        "frr/daemons": FRR_DAEMONS,
        "evpnd/evpnd.yaml": EVPND_YAML.format(**values),
    }
    directory.chmod(0o755)
    for name, text in files.items():
        path = directory / name
        path.parent.mkdir(mode=0o755, exist_ok=True)
        path.parent.chmod(0o755)
        path.write_text(text)
        path.chmod(0o644)
    return directory / "lab.clab.yml"


@pytest.fixture(scope="module")
def lab() -> Iterator[Lab]:
    name = f"evt-frr6-{secrets.token_hex(3)}"
    directory = Path(tempfile.mkdtemp(prefix=f"{name}-"))
    try:
        with running_lab(write_lab(directory, name)):
            yield Lab(Fabric(name), labstate.lab_dir(name) / "frr" / "bgpd.log")
    finally:
        shutil.rmtree(directory, ignore_errors=True)


def notifications(session: list[str]) -> list[tuple[int, int, str]]:
    """(code, subcode, data) of the NOTIFICATIONs bgpd sent evpnd in one session."""
    return [(int(m[1]), int(m[2]), m[3].strip())
            for m in map(NOTIFICATION_SENT.search, session) if m]  # fmt: skip


def test_frr_resets_the_session_over_the_ipv6_pmsi_tunnel_of_evpnds_type3(lab: Lab) -> None:
    def two_sessions_ended() -> list[list[str]] | None:
        ended = lab.sessions()[:-1]  # the last one may still be up
        return ended if len(ended) >= 2 else None

    def notified() -> dict[str, Any] | None:
        peer = lab.evpnd_peer()
        return peer if peer.get("last_notification") else None

    # The session comes up (the OPEN and the config are fine) and FRR ends it
    # again, over and over: every session that ended, ended the same way, on
    # FRR's PMSI length check and nothing else.
    ended = lab.wait_for("FRR to bring the session with evpnd up and down twice",
                         two_sessions_ended)  # fmt: skip
    for session in ended:
        assert any(PMSI_COMPLAINT in line for line in session), session
        ((code, subcode, data),) = notifications(session)
        assert (code, subcode) == PMSI_NOTIFICATION[:2], session
        assert data.startswith(PMSI_NOTIFICATION[2]), session

    # FRR counted what evpnd sent and kept none of it: no Type-3 of evpnd's.
    neighbor = lab.neighbor()
    stats = neighbor["messageStats"]
    assert stats["updatesRecv"] >= 2 and stats["notificationsSent"] >= 2, stats
    assert neighbor["connectionsDropped"] >= 2, neighbor
    assert neighbor["addressFamilyInfo"]["l2VpnEvpn"]["acceptedPrefixCounter"] == 0, neighbor
    type3 = lab.vtysh_json("show bgp l2vpn evpn route type multicast")
    assert HOST_VTEP not in json.dumps(type3), type3

    # evpnd's side of it: FRR's NOTIFICATION 3/5 received, the session lost.
    peer = lab.wait_for("evpnd to report FRR's NOTIFICATION", notified)
    note = peer["last_notification"]
    assert (note["code"], note["subcode"], note["direction"]) == (3, 5, "receive"), peer
    assert peer["established_count"] >= 1 and peer["drops"] >= 1, peer


def test_frr_zebra_takes_an_ipv6_local_vxlan_device_as_vtep_0_0_0_0(lab: Lab) -> None:
    def vni_100() -> dict[str, Any] | None:
        shown = lab.vtysh_json("show evpn vni 100")
        return shown if shown.get("vni") == 100 else None

    def own_type3() -> str | None:
        shown = json.dumps(lab.vtysh_json("show bgp l2vpn evpn route type multicast"))
        return shown if f"[3]:[0]:[32]:[{FRR_ROUTER_ID}]" in shown else None

    link = json.loads(lab.fabric.run("frr", ["ip", "-d", "-j", "link", "show", "vxlan100"]).stdout)
    assert link[0]["linkinfo"]["info_data"]["local6"] == FRR_ADDRESS
    vni = lab.wait_for("zebra to know VNI 100", vni_100)
    assert vni["vxlanInterface"] == "vxlan100", vni
    assert vni["vtepIp"] == "0.0.0.0", vni
    # ...and bgpd originates VNI 100's Type-3 for its router id instead.
    shown = lab.wait_for("FRR's own Type-3 route", own_type3)
    assert FRR_ADDRESS not in shown, shown
