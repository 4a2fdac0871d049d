"""The oracle's comparison, on JSON as FRR 8.4.4 and iproute2 printed it in the chaos lab."""

from __future__ import annotations

from tests.chaos import oracle

FRR_MACS = {"numMacs": 3, "macs": {
    "02:cc:00:00:02:01": {"type": "remote", "remoteVtep": "198.51.100.2", "localSequence": 0,
                          "remoteSequence": 3, "detectionCount": 0, "isDuplicate": False},
    "02:11:00:00:00:01": {"type": "remote", "remoteVtep": "192.0.2.11", "localSequence": 0,
                          "remoteSequence": 0, "detectionCount": 0, "isDuplicate": False},
    "02:aa:00:00:00:01": {"type": "local", "intf": "veth0", "localSequence": 0,
                          "remoteSequence": 0, "detectionCount": 0, "isDuplicate": False},
}}  # fmt: skip
FRR_ARP = {"numArpNd": 1, "10.100.0.1": {
    "type": "remote", "state": "active", "mac": "02:cc:00:00:02:01",
    "remoteVtep": "198.51.100.2", "localSequence": 0, "remoteSequence": 0}}  # fmt: skip


def imet(rd: str, vtep: str, rt: str) -> dict:
    prefix = f"[3]:[0]:[32]:[{vtep}]"
    return {rd: {"rd": rd, prefix: {"prefix": prefix, "paths": [[{
        "valid": True, "bestpath": True, "routeType": 3,
        "extendedCommunity": {"string": f"RT:{rt} ET:8"},
        "nexthops": [{"ip": vtep, "afi": "ipv4", "used": True}]}]]}}}  # fmt: skip


IMETS = {**imet("192.0.2.1:2", "192.0.2.1", "65000:100"),
         **imet("192.0.2.11:100", "192.0.2.11", "65000:100"),
         **imet("192.0.2.11:200", "192.0.2.11", "65000:200"),
         **imet("198.51.100.9:200", "198.51.100.9", "65000:200"),
         "numPrefix": 4}  # fmt: skip
HOST2_FDB = [
    {"mac": "02:cc:00:00:02:01", "flags": ["extern_learn"], "master": "br100", "state": ""},
    {"mac": "02:cc:00:00:02:01", "dst": "198.51.100.2", "flags": ["self", "extern_learn"]},
    {"mac": "02:11:00:00:00:01", "dst": "192.0.2.11", "flags": ["self", "extern_learn"]},
    {"mac": "02:aa:00:00:00:01", "dst": "192.0.2.1", "flags": ["self", "extern_learn"]},
    {"mac": "00:00:00:00:00:00", "dst": "192.0.2.1", "flags": ["self", "extern_learn"],
     "state": "permanent"},
    {"mac": "00:00:00:00:00:00", "dst": "192.0.2.11", "flags": ["self", "extern_learn"],
     "state": "permanent"},
    # An admin's entry (no extern_learn) is not evpnd's: never compared.
    {"mac": "00:00:00:00:00:00", "dst": "203.0.113.9", "flags": ["self"], "state": "permanent"},
]  # fmt: skip
HOST2_NEIGH = [{"dst": "10.100.0.1", "lladdr": "02:cc:00:00:02:01", "extern_learn": None,
                "state": ["NOARP"], "protocol": "238"},
               {"dst": "10.100.0.7", "lladdr": "02:00:00:00:00:07", "state": ["REACHABLE"]}]


def view() -> oracle.FrrView:
    return oracle.frr_view("192.0.2.1", FRR_MACS, FRR_ARP, IMETS, vni=100)


def test_frr_view_places_every_mac_and_only_this_vnis_flood_vteps() -> None:
    found = view()
    assert found.macs == {"02:cc:00:00:02:01": "198.51.100.2",
                          "02:11:00:00:00:01": "192.0.2.11",
                          "02:aa:00:00:00:01": "192.0.2.1"}  # FRR's own local MAC
    assert found.floods == {"192.0.2.1", "192.0.2.11"}
    assert found.neighbors == {"10.100.0.1": ("02:cc:00:00:02:01", "198.51.100.2")}
    assert oracle.frr_view("192.0.2.1", FRR_MACS, FRR_ARP, IMETS).floods == {
        "192.0.2.1", "192.0.2.11", "198.51.100.9"}


def test_a_host_equal_to_frr_has_no_differences() -> None:
    host2 = oracle.host_tables(HOST2_FDB, HOST2_NEIGH)
    assert not oracle.compare(view(), "192.0.2.12", host2)


def test_the_host_at_a_vtep_wants_nothing_frr_places_behind_it() -> None:
    host1 = oracle.host_tables([e for e in HOST2_FDB if e.get("dst") != "192.0.2.11"],
                               HOST2_NEIGH)  # fmt: skip
    assert not oracle.compare(view(), "192.0.2.11", host1)
    found = oracle.compare(view(), "192.0.2.11", oracle.host_tables(HOST2_FDB, HOST2_NEIGH))
    assert found.stale == ["mac 02:11:00:00:00:01 dst 192.0.2.11", "flood 192.0.2.11"]
    assert found.missing == []


def test_stale_missing_and_moved_entries_are_counted() -> None:
    fdb = [e for e in HOST2_FDB if e["mac"] != "02:aa:00:00:00:01"]
    fdb.append({"mac": "02:bb:00:00:00:01", "dst": "198.51.100.7",
                "flags": ["self", "extern_learn"]})  # fmt: skip
    moved = [{**e, "dst": "198.51.100.3"} if e["mac"] == "02:cc:00:00:02:01" and "dst" in e
             else e for e in fdb]  # fmt: skip
    found = oracle.compare(view(), "192.0.2.12", oracle.host_tables(moved, []))
    assert found.stale == ["mac 02:bb:00:00:00:01 dst 198.51.100.7",
                           "mac 02:cc:00:00:02:01 dst 198.51.100.3"]
    assert found.missing == ["mac 02:aa:00:00:00:01 dst 192.0.2.1",
                             "mac 02:cc:00:00:02:01 dst 198.51.100.2",
                             "neigh 10.100.0.1 02:cc:00:00:02:01"]
    assert found


def test_type2_routes_from_one_next_hop() -> None:
    table = {"192.0.2.11:100": {"rd": "192.0.2.11:100", "[2]:[0]:[48]:[02:11:00:00:00:01]": {
        "paths": [[{"valid": True, "bestpath": True, "routeType": 2, "mac": "02:11:00:00:00:01",
                    "nexthops": [{"ip": "192.0.2.11"}]}]]}},
             "198.51.100.1:100": {"[2]:[0]:[48]:[02:cc:00:00:01:01]": {
        "paths": [[{"valid": True, "bestpath": True, "routeType": 2, "mac": "02:cc:00:00:01:01",
                    "nexthops": [{"ip": "198.51.100.1"}]}]]}}}  # fmt: skip
    assert oracle.type2_macs_from(table, "192.0.2.11") == {"02:11:00:00:00:01"}
