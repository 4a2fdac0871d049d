"""When a received route is unusable, whichever decoder read it (pure).

A route can be well-formed BGP and still name something the dataplane must
never be given: a next hop or PMSI tunnel that is no host (0.0.0.0, a
loopback, multicast or broadcast address) would become the destination of
FDB and flood entries; a Type-2 MAC that is all zero, multicast or broadcast
would become a remote MAC entry (the all-zero one on the very key of the
flood entries). Such a route is treated as withdrawn, in the spirit of
RFC 7606 (it cannot be used, and an earlier copy of it must not stay): its
key is withdrawn, one `DecodeError` per UPDATE names every field and value,
and the UPDATE's other routes are kept.

- A next hop that is no VTEP concerns every route of the UPDATE's
  MP_REACH_NLRI: reason "treat-as-withdraw" (an attribute of the UPDATE is
  unusable), like a malformed attribute.
- A bad MAC or PMSI tunnel concerns the routes that carry it: reason
  "bad-route".

The raw decoder (wire.py) and the JSON decoder (decode.py) both ask this
module, through evpnd/validate.py, so the two paths withdraw the same keys
and say the same thing (tests/unit/test_wire.py holds them to it).
"""

from __future__ import annotations

from evpnd import validate
from evpnd.model import ImetRoute, IPAddress, MacIpKey, MacIpRoute, Route

TREAT_AS_WITHDRAW = "treat-as-withdraw"
BAD_ROUTE = "bad-route"
INGRESS_REPLICATION = "ingress-replication"


def next_hop_problem(address: IPAddress) -> str | None:
    """What is wrong with an EVPN next hop (the VTEP of its routes), or None."""
    why = validate.unicast_problem(address)
    return None if why is None else f"MP_REACH_NLRI next hop {address} is no VTEP ({why})"


def mac_problem(key: MacIpKey) -> str | None:
    """What is wrong with a Type-2 route's MAC, or None."""
    try:
        validate.unicast_mac(key.mac)
    except ValueError as exc:
        return f"Type-2 route with RD {key.rd}: {exc}"
    return None


def route_problem(route: Route) -> str | None:
    """What makes one announced route unusable, naming the field and value, or None."""
    if isinstance(route, MacIpRoute):
        return mac_problem(route.key)
    if isinstance(route, ImetRoute) and route.tunnel_type == INGRESS_REPLICATION:
        # The VTEP the flood entry would send BUM traffic to.
        field = "PMSI tunnel" if route.tunnel is not None else "originator"
        why = validate.unicast_problem(route.vtep)
        if why is not None:
            return f"Type-3 route with RD {route.key.rd}: {field} {route.vtep} is no VTEP ({why})"
    return None
