"""bench.bgpsend's prebuilt UPDATEs, read back by ExaBGP's own UPDATE parser.

ExaBGP runs in a subprocess (its logger and caches are process-wide): it gets
bgpsend's OPEN as both ends of the session and then the announce and withdraw
streams, and prints what each UPDATE carries.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections import Counter
from ipaddress import IPv4Address
from pathlib import Path

import pytest

from bench import bgpsend

DECODE = r"""
import json, struct, sys
from exabgp.environment import getenv
from exabgp.logger import log
log.init(getenv())
from exabgp.bgp.message import Open, Update
from exabgp.bgp.message.direction import Direction
from exabgp.bgp.message.open.capability import Negotiated

opening, *streams = (open(path, "rb").read() for path in sys.argv[1:])
negotiated = Negotiated({"capability": {"aigp": False}})
negotiated.sent(Open.unpack_message(opening[19:]))
negotiated.received(Open.unpack_message(opening[19:]))
out = []
for stream in streams:
    updates, pos = [], 0
    while pos < len(stream):
        length = struct.unpack_from("!H", stream, pos + 16)[0]
        update = Update.unpack_message(stream[pos + 19 : pos + length], Direction.IN, negotiated)
        updates.append({"size": length, "nlris": [
            [str(n), str(n.nexthop), n.action.name] for n in update.nlris]})
        pos += length
    out.append(updates)
print(json.dumps(out))
"""

MAC = re.compile(r"evpn:macadv::(\S+):100:-:0:([0-9A-F:]{17})/48:: label 6 \(100\)")
IMET = re.compile(r"evpn:multicast::(\S+):100:0:(\S+)")


def decoded(tmp_path: Path, count: int, vteps: int, per_update: int) -> list[list[dict]]:
    announce, withdraw = bgpsend.encode(count, vteps, 65000, 100, per_update)
    files = []
    for name, data in (("open", bgpsend.open_message(65000, IPv4Address("192.0.2.10"), 180)),
                       ("announce", announce), ("withdraw", withdraw)):
        path = tmp_path / name
        path.write_bytes(data)
        files.append(str(path))
    result = subprocess.run([sys.executable, "-c", DECODE, *files], capture_output=True,
                            text=True, timeout=120, check=True)
    return json.loads(result.stdout)


def mac_index(mac: str) -> int:
    octets = [int(o, 16) for o in mac.split(":")]
    assert octets[:2] == [0x02, 0xBB] and octets[5] == 0x01, mac
    return octets[2] << 16 | octets[3] << 8 | octets[4]


@pytest.mark.parametrize(("count", "vteps", "per_update"), [(300, 40, 1), (1000, 40, 10),
                                                            (2000, 4, 100)])
def test_every_route_once_with_its_vteps_next_hop_at_most_k_per_update(
        tmp_path: Path, count: int, vteps: int, per_update: int) -> None:
    announce, withdraw = decoded(tmp_path, count, vteps, per_update)
    # the flood lists first, one UPDATE each, next hop = the VTEP they announce
    for update in announce[:vteps]:
        [(nlri, nexthop, action)] = update["nlris"]
        match = IMET.fullmatch(nlri)
        assert match and match[1] == match[2] == nexthop and action == "ANNOUNCE"
    seen: Counter[int] = Counter()
    for update in announce[vteps:]:
        assert 1 <= len(update["nlris"]) <= per_update
        assert update["size"] <= bgpsend.MAX_MESSAGE
        nexthops = {nexthop for _, nexthop, _ in update["nlris"]}
        assert len(nexthops) == 1, "one UPDATE, one next hop"
        for nlri, nexthop, action in update["nlris"]:
            match = MAC.fullmatch(nlri)
            assert match and action == "ANNOUNCE", nlri
            index = mac_index(match[2])
            # round robin: MAC i belongs to VTEP i % vteps, which is its RD and next hop
            assert match[1] == nexthop == str(bgpsend.vtep(index % vteps))
            seen[index] += 1
    assert seen == Counter(range(count))
    # packed as far as each VTEP's share allows
    shares = [len(range(v, count, vteps)) for v in range(vteps)]
    assert len(announce) - vteps == sum(-(-share // per_update) for share in shares)
    # withdrawals: the same NLRIs, MACs first and the flood lists last, packed the same way
    withdrawn = [nlri for update in withdraw for nlri, _, _ in update["nlris"]]
    announced = [nlri for update in announce for nlri, _, _ in update["nlris"]]
    assert sorted(withdrawn) == sorted(announced)
    assert all(MAC.fullmatch(n) for n in withdrawn[:count])
    assert all(IMET.fullmatch(n) for n in withdrawn[count:])
    assert all(a == "WITHDRAW" for u in withdraw for _, _, a in u["nlris"])
    assert all(len(u["nlris"]) <= per_update for u in withdraw)


def test_per_update_one_is_the_plain_round_robin_stream() -> None:
    """k1 keeps the byte stream the earlier benchmarks sent: MAC i in UPDATE 40 + i."""
    announce, _ = bgpsend.encode(100, 40, 65000, 100, 1)
    common = bgpsend.common_attributes(65000, 100)
    expected = b"".join(bgpsend.reach(bgpsend.vtep(i % 40),
                                      bgpsend.type2(i, bgpsend.vtep(i % 40), 100), common)
                        for i in range(100))
    assert announce.endswith(expected)
    assert bgpsend.updates(announce) == 140


def test_the_largest_k_fills_but_never_overflows_a_message() -> None:
    limit = bgpsend.max_per_update(65000, 100)
    announce, _ = bgpsend.encode(limit * 2, 1, 65000, 100, limit)
    sizes = []
    pos = 0
    while pos < len(announce):
        sizes.append(int.from_bytes(announce[pos + 16 : pos + 18], "big"))
        pos += sizes[-1]
    assert max(sizes) <= bgpsend.MAX_MESSAGE < max(sizes) + bgpsend.TYPE2_SIZE
    with pytest.raises(ValueError):
        bgpsend.encode(10, 1, 65000, 100, limit + 1)


def test_keepalives_follow_the_shorter_hold_time_of_the_session() -> None:
    # The chaos lab's rr holds 9 s and the sources offer 30: a keepalive every 10 s let
    # rr expire the session whenever no UPDATE flowed (every route withdrawn, then back).
    peer_open = bgpsend.open_message(65000, IPv4Address("192.0.2.1"), 9)[19:]
    assert bgpsend.keepalive_interval(30, peer_open) == 3.0
    assert bgpsend.keepalive_interval(6, peer_open) == 2.0
    no_keepalives = bgpsend.open_message(65000, IPv4Address("192.0.2.1"), 0)[19:]
    assert bgpsend.keepalive_interval(30, no_keepalives) == 0.0
