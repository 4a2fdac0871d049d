"""The evpn-rr lab as its topology file defines it, for the tests that run on it."""

from __future__ import annotations

from tests.conftest import REPO
from tests.netns.fabric import Fabric

LAB_FILE = REPO / "containerlab" / "evpn-rr.clab.yml"
LAB = "evpn-rr"
FABRIC = Fabric(LAB)

HOSTS = ("host1", "host2", "host3")
VTEP = {h: f"10.0.{h[-1]}.2" for h in HOSTS}
VNIS = {"host1": (100, 200), "host2": (100, 200), "host3": (100,)}
# endpoint -> (host, vni, ip, mac)
ENDPOINTS = {
    f"h{h}e{n}": (f"host{h}", 200 if n == 3 else 100,
                  f"10.{200 if n == 3 else 100}.0.{h}{n}", f"02:00:00:00:0{h}:0{n}")
    for h in (1, 2, 3) for n in (1, 2, 3) if not (h == 3 and n == 3)
}  # fmt: skip
