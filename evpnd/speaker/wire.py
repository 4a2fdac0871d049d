"""Raw BGP UPDATE bodies (L2VPN/EVPN) -> typed messages, without ExaBGP's parser.

The raw receive path inside ExaBGP (rawreceive.py) hands evpnd the UPDATEs
whose NLRI are all EVPN undecoded, one text line per batch from one peer:

    =evpn <peer address> <base64 body> [<base64 body> ...]\\n

A body is one UPDATE without its 19-byte header. `WireDecoder` turns a line
into the same `Message` values the JSON path (ExaBGP's parser, its JSON
encoder, then `decode.Decoder`) makes of the same UPDATE: the same route
objects with the same field values, the same End-of-RIB, the same `ignored`
counts for unknown route types and other families (types 1 and 4, multihoming,
are routes: held and shown, not acted on). Pure (byte indexing
and slicing, cheaper than `struct` for these few fields per NLRI), no I/O,
and no input makes it raise: anything unexpected becomes a `DecodeError`,
reason "internal-error" at worst.

Where ExaBGP's JSON has quirks, the results are reproduced, not the quirks:
the VNI is the raw 24-bit label, the second Type-2 label is the L3VNI,
communities keep ExaBGP's order (it sorts them by their bytes, which decides
the order of `route_targets`), the ESI of zeros is `ZERO_ESI`, MACs are lower
case. Deliberate differences, all on input ExaBGP itself refuses or mangles:
- an IPv6 (16 octets) or IPv6 global + link-local (32) MP_REACH next hop is
  accepted, the global address being the VTEP; ExaBGP 5.0.15 only takes 4
  octets for EVPN and resets the session otherwise;
- the PMSI label is the raw 24-bit value for every tunnel type; ExaBGP's
  string prints label>>4 for any tunnel but IPv4 ingress replication;
- what ExaBGP answers with a NOTIFICATION (a malformed NLRI, a malformed
  PMSI) or takes as it comes (an IPv4 Type-5 prefix longer than /32) is
  handled as below.

Error handling follows RFC 7606 (sections 2-5 and 7), with the one liberty a
decoder must take: it cannot reset a session. Outcomes, by reason:

- "treat-as-withdraw" (RFC 7606 section 2): a path attribute is malformed: a
  length or value the attribute's rules refuse (section 7: ORIGIN, AS_PATH,
  NEXT_HOP, MED, LOCAL_PREF, COMMUNITY, ORIGINATOR_ID, CLUSTER_LIST, extended,
  IPv6 extended and large communities), Optional/Transitive flags that
  contradict the attribute (3c), a missing ORIGIN or AS_PATH while routes are
  announced (3d), an attribute overrunning the attribute section (4), a PMSI
  tunnel attribute too short or with an ingress-replication tunnel that is
  no address (RFC 7606 names no rule for PMSI; treat-as-withdraw because it
  decides where BUM traffic goes, as section 8 advises for attributes that
  affect route selection or installation), or
  an MP_REACH next hop that is no usable VTEP (unspecified, loopback,
  multicast, broadcast: usable.py). Every NLRI of the UPDATE comes out as a
  withdrawal of its key, MP_UNREACH's first, then MP_REACH's (a
  `RouteUpdate` with only `withdrawn`), plus one `DecodeError` naming the
  attributes and problems.
  AS_PATH is checked for framing only, with 2- or 4-octet AS numbers
  (whichever frames), since the session's choice is not known here.
  LOCAL_PREF, ORIGINATOR_ID and CLUSTER_LIST get their internal-peer rule
  (treat-as-withdraw) because whether the peer is internal is not known here.
- ignored, counted in `stats.ignored`: route types other than 1 to 5 (an
  NLRI type one does not support is no error, RFC 7606 5.4; only its framing
  is checked), other address families.
- attribute discard (section 2): a malformed ATOMIC_AGGREGATE, AGGREGATOR,
  AS4_PATH or AS4_AGGREGATOR (7.6, 7.7, RFC 6793 section 6) is skipped;
  evpnd reads none of them. A repeated attribute other than MP_REACH and
  MP_UNREACH keeps its first copy (3g).
- "malformed-nlri", "malformed-mp-attribute", "malformed-update": the
  UPDATE's routes cannot be told, so treat-as-withdraw is impossible (3j)
  and RFC 7606 prescribes a session reset or AFI/SAFI disable: an NLRI that
  runs past the end of its field or that is no valid route of its type
  (5.3), an MP_REACH/MP_UNREACH that is too short, carries the wrong flags
  (5.3) or a next-hop length EVPN does not have (7.11), a body whose length
  fields contradict it (RFC 4271 6.3), an attribute section broken before
  any MP attribute could be located. Nothing of that UPDATE is applied, not
  even the NLRI before the bad one: RFC 7606 gives no partial processing
  for an unparseable NLRI field, and the prescribed reset or disable would
  drop every route of the peer anyway. One `DecodeError`; acting on it (the
  reset or disable) is the shell's call, `SESSION_RESET_REASONS` lists them.
- A repeated MP_REACH or MP_UNREACH is a session reset in RFC 7606 (3g,
  Malformed Attribute List). Both copies parse, so their routes are known:
  the decoder withdraws all of them ("treat-as-withdraw"), the part of a
  reset's effect that concerns this UPDATE.
- "bad-route" (usable.py): a well-formed route the dataplane must not be
  given: a Type-2 MAC that is all zero, multicast or broadcast, a Type-3
  ingress-replication tunnel that is no usable VTEP. That route comes out as
  a withdrawal of its key (after the UPDATE's other withdrawals), the
  UPDATE's other routes as they are, plus one `DecodeError` naming each
  such route's field and value. The JSON path does the same.
- "bad-frame": the line is not a frame, its peer is not an address, or a
  body is not base64 (that body only; the others are decoded).

The per-attribute rules and what the communities, PMSI and next hop mean
live in wire_attributes.py; this module frames lines and UPDATEs, locates the
MP attributes, reads the NLRI and keeps the caches.

Caches (bounded, emptied when full) make 100k routes share their repeated
values: the decoded attribute set keyed by the bytes of every attribute but
MP_REACH/MP_UNREACH (one route-target tuple, router MAC, PMSI for all routes
of an attribute set), next hops, RD texts, ESI texts, label values.
"""

from __future__ import annotations

import binascii
from dataclasses import replace
from ipaddress import IPv4Address, IPv4Network, IPv6Address, IPv6Network, ip_address
from typing import Any, TypeVar

from evpnd.model import (
    ZERO_ESI,
    EadKey,
    EadRoute,
    EsKey,
    EsRoute,
    ImetKey,
    ImetRoute,
    IPAddress,
    MacIpKey,
    MacIpRoute,
    PrefixKey,
    PrefixRoute,
    Route,
    RouteKey,
)
from evpnd.speaker import usable
from evpnd.speaker.decode import DecodeStats
from evpnd.speaker.messages import DecodeError, EndOfRib, Message, RouteUpdate
from evpnd.speaker.usable import BAD_ROUTE, mac_problem, route_problem
from evpnd.speaker.wire_attributes import (
    EVPN_NEXT_HOP_LENGTHS,
    EXTENDED,
    MP_REACH,
    MP_UNREACH,
    NAMES,
    OPTIONAL,
    TRANSITIVE,
    PathAttributes,
    decode_attributes,
    evpn_next_hop,
)
from evpnd.validate import is_unicast_mac

FRAME_VERB = b"=evpn"
AFI_L2VPN = 25
SAFI_EVPN = 70

TREAT_AS_WITHDRAW = usable.TREAT_AS_WITHDRAW
MALFORMED_NLRI = "malformed-nlri"
MALFORMED_MP = "malformed-mp-attribute"
MALFORMED_UPDATE = "malformed-update"
BAD_FRAME = "bad-frame"
INTERNAL_ERROR = "internal-error"
# RFC 7606 asks for a session reset (or AFI/SAFI disable) for these.
SESSION_RESET_REASONS = frozenset({MALFORMED_NLRI, MALFORMED_MP, MALFORMED_UPDATE})

CACHE_SIZE = 4096  # attribute sets
VALUE_CACHE_SIZE = 16384  # next hops, RDs, ESIs, labels, peers

# The Optional and Transitive flag bits; MP_REACH_NLRI and MP_UNREACH_NLRI are
# optional non-transitive (RFC 4760 3, 4).
_KIND_BITS = OPTIONAL | TRANSITIVE

# ExaBGP's names (exabgp.protocol.family), as the JSON path shows them.
_AFI_NAMES = {1: "ipv4", 2: "ipv6", 25: "l2vpn", 16388: "bgp-ls"}
_SAFI_NAMES = {
    1: "unicast", 2: "multicast", 4: "nlri-mpls", 5: "mcast-vpn", 65: "vpls", 70: "evpn",
    71: "bgp-ls", 72: "bgp-ls-vpn", 85: "mup", 128: "mpls-vpn", 132: "rtc", 133: "flow",
    134: "flow-vpn",
}  # fmt: skip

# (other attributes' bytes, MP_REACH_NLRIs, MP_UNREACH_NLRIs, framing problem), an MP
# attribute as (flags, value start, value end)
_Located = tuple[bytes, list[tuple[int, int, int]], list[tuple[int, int, int]], str]


class _BadRoute(Exception):
    """Internal: one announced route is unusable (usable.py); withdrawn, the rest kept."""

    def __init__(self, key: RouteKey, detail: str) -> None:
        super().__init__(key, detail)
        self.key = key
        self.detail = detail


class _Unusable(Exception):
    """Internal: the UPDATE's routes cannot be told apart; `reason` is SESSION_RESET class."""

    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(reason, detail)
        self.reason = reason
        self.detail = detail


K = TypeVar("K")
V = TypeVar("V")


def _remember(cache: dict[K, V], key: K, value: V, size: int = VALUE_CACHE_SIZE) -> V:
    if len(cache) >= size:
        cache.clear()  # bounded: a long-lived decoder must not keep every value it saw
    cache[key] = value
    return value


class WireDecoder:
    """Decodes raw EVPN UPDATE frames; keeps its counters (`stats`) and bounded caches."""

    def __init__(self, stats: DecodeStats | None = None) -> None:
        """`stats`: counters to share with the JSON decoder (one set for both paths)."""
        self.stats = DecodeStats() if stats is None else stats
        self._attrs: dict[bytes, PathAttributes] = {}
        self._targets: dict[tuple[str, ...], tuple[str, ...]] = {}
        self._nexthops: dict[bytes, IPAddress | str] = {}
        self._addresses: dict[bytes, IPAddress] = {}
        self._rds: dict[bytes, str] = {}
        self._esis: dict[bytes, str] = {}
        self._labels: dict[bytes, int] = {}
        self._peers: dict[bytes, IPAddress] = {}
        self._last_key = b""  # the other attributes of the last UPDATE with one MP attribute

    # ------------------------------------------------------------------ entry points

    def decode_frame(self, line: bytes | str) -> list[Message]:
        """One frame line (`=evpn PEER BODY...`, trailing newline or not) -> its messages."""
        self.stats.lines += 1
        self.stats.frames += 1
        try:
            out = self._frame(line)
        except Exception as exc:  # a daemon must survive any input; keep the evidence
            out = [DecodeError(INTERNAL_ERROR, None, f"{type(exc).__name__}: {exc}"[:200])]
        return self._counted(out)

    def decode_update(self, peer: IPAddress, body: bytes) -> list[Message]:
        """One UPDATE body (no 19-byte header) received from `peer` -> its messages."""
        try:
            out = self._unpack(peer, body)
        except _Unusable as exc:
            out = [DecodeError(exc.reason, peer, exc.detail)]
        except Exception as exc:
            out = [DecodeError(INTERNAL_ERROR, peer, f"{type(exc).__name__}: {exc}"[:200])]
        return self._counted(out)

    def _counted(self, out: list[Message]) -> list[Message]:
        stats = self.stats
        for msg in out:
            stats.messages[type(msg).__name__] += 1
            if isinstance(msg, RouteUpdate):
                stats.announced += len(msg.announced)
                stats.withdrawn += len(msg.withdrawn)
            elif isinstance(msg, DecodeError):
                stats.errors[msg.reason] += 1
                if msg.peer is not None:
                    stats.errors_by_peer[str(msg.peer)] += 1
        return out

    # ------------------------------------------------------------------------ frame

    def _frame(self, line: bytes | str) -> list[Message]:
        if isinstance(line, str):
            try:
                line = line.encode("ascii")
            except UnicodeEncodeError:
                return [DecodeError(BAD_FRAME, None, "frame is not ASCII")]
        words = line.split()
        if not words:
            self.stats.ignored["empty-line"] += 1
            return []
        if words[0] != FRAME_VERB:
            return [DecodeError(BAD_FRAME, None, f"not a frame: {words[0][:40]!r}")]
        if len(words) < 2:
            return [DecodeError(BAD_FRAME, None, "frame without a peer address")]
        peer = self._peers.get(words[1])
        if peer is None:
            try:
                address = ip_address(words[1].decode("ascii"))
            except (UnicodeDecodeError, ValueError):
                return [DecodeError(BAD_FRAME, None, f"peer address {words[1][:60]!r}")]
            peer = _remember(self._peers, words[1], address, 1024)
        if len(words) < 3:
            return [DecodeError(BAD_FRAME, peer, "frame without an UPDATE")]
        out: list[Message] = []
        for index, text in enumerate(words[2:], 1):
            try:
                body = binascii.a2b_base64(text, strict_mode=True)
            except (binascii.Error, ValueError):
                out.append(DecodeError(BAD_FRAME, peer, f"UPDATE {index} is not base64"))
                continue
            try:
                out.extend(self._unpack(peer, body))
            except _Unusable as exc:
                out.append(DecodeError(exc.reason, peer, exc.detail))
            except Exception as exc:
                detail = f"UPDATE {index}: {type(exc).__name__}: {exc}"[:200]
                out.append(DecodeError(INTERNAL_ERROR, peer, detail))
        return out

    # ----------------------------------------------------------------------- UPDATE

    def _unpack(self, peer: IPAddress, body: bytes) -> list[Message]:
        """One UPDATE; raises _Unusable when its routes cannot be told apart."""
        size = len(body)
        if size < 4:
            raise _Unusable(MALFORMED_UPDATE, f"UPDATE body of {size} bytes (at least 4)")
        withdrawn_end = 2 + (body[0] << 8 | body[1])
        if withdrawn_end + 2 > size:
            raise _Unusable(MALFORMED_UPDATE, "withdrawn routes length runs past the UPDATE")
        start = withdrawn_end + 2
        end = start + (body[withdrawn_end] << 8 | body[withdrawn_end + 1])
        if end > size:
            raise _Unusable(MALFORMED_UPDATE, "total path attribute length runs past the UPDATE")
        legacy = withdrawn_end > 2 or end < size
        if legacy:
            # IPv4 unicast in the UPDATE's own fields: not ours (the JSON path counts them).
            count = _count_ipv4_prefixes(body, 2, withdrawn_end) + _count_ipv4_prefixes(
                body, end, size
            )
            self.stats.ignored["family-ipv4 unicast"] += count
        if start == end:
            return [] if legacy else [EndOfRib(peer, "ipv4", "unicast")]  # RFC 4724 2

        located = self._same_layout(body, start, end)
        if located is None:
            located = self._walk(body, start, end)
        key, reach, unreach, broken = located
        attrs = self._attrs.get(key)
        if attrs is None:
            attrs = _remember(self._attrs, key, self._attributes(key), CACHE_SIZE)

        problems: list[str] = []
        if broken:
            # RFC 7606 4: treat-as-withdraw; but the routes are only known if
            # the MP attributes were found before the break.
            if not reach and not unreach:
                raise _Unusable(
                    MALFORMED_UPDATE, f"{broken}, before any MP_REACH_NLRI/MP_UNREACH_NLRI"
                )
            problems.append(broken)
        if len(reach) > 1 or len(unreach) > 1:
            name = "MP_REACH_NLRI" if len(reach) > 1 else "MP_UNREACH_NLRI"
            problems.append(f"{name} appears more than once")
        if attrs.problems:
            problems.append(attrs.problems)
        if attrs.missing and reach:
            problems.append(f"{attrs.missing} missing")  # RFC 7606 3(d)

        ignored: list[str] = []
        # (next hop, NLRI start, NLRI end) of each EVPN MP_REACH_NLRI
        reached: list[tuple[IPAddress | None, int, int]] = []
        for flags, value, value_end in reach:
            reached.extend(self._mp_reach(body, flags, value, value_end, problems, ignored))

        withdrawn: list[RouteKey] = []
        empty_unreach: tuple[str, str] | None = None
        for flags, value, value_end in unreach:
            empty_unreach = self._mp_unreach(body, flags, value, value_end, withdrawn, ignored)

        announced: list[Route] = []
        unusable: list[_BadRoute] = []
        for nexthop, nlri_start, nlri_end in reached:
            if problems or nexthop is None:
                self._evpn_nlri(body, nlri_start, nlri_end, None, attrs, withdrawn, ignored)
            else:
                self._evpn_nlri(body, nlri_start, nlri_end, nexthop, attrs, announced, ignored,
                                unusable)
        if unusable:
            withdrawn.extend(bad.key for bad in unusable)

        for reason in ignored:
            self.stats.ignored[reason] += 1
        if empty_unreach and len(unreach) == 1 and not (reach or key or broken or legacy):
            # RFC 4724 2: an UPDATE whose only content is an empty MP_UNREACH_NLRI.
            return [EndOfRib(peer, *empty_unreach)]
        out: list[Message] = []
        if announced or withdrawn:
            out.append(RouteUpdate(peer, tuple(announced), tuple(withdrawn)))
        if problems:
            out.append(DecodeError(TREAT_AS_WITHDRAW, peer, "; ".join(problems)[:300]))
        if unusable:
            detail = "; ".join(bad.detail for bad in unusable)[:300]
            out.append(DecodeError(BAD_ROUTE, peer, detail))
        return out

    def _same_layout(self, body: bytes, start: int, end: int) -> _Located | None:
        """The common case without a walk: the previous UPDATE's other attributes,
        byte for byte, and one MP attribute after them (ExaBGP, GoBGP) or before (FRR)."""
        key = self._last_key
        pos = start + len(key)
        if pos + 3 <= end and body[pos + 1] in (MP_REACH, MP_UNREACH) and body.startswith(
            key, start
        ):
            at, stop = pos, end
        elif end - start >= 3 + len(key) and body[start + 1] in (MP_REACH, MP_UNREACH):
            at, stop = start, end - len(key)
            if not body.endswith(key, stop, end):
                return None
        else:
            return None
        flags = body[at]
        if flags & EXTENDED:
            if at + 4 > stop:
                return None
            value = at + 4
            value_end = value + (body[at + 2] << 8 | body[at + 3])
        else:
            value = at + 3
            value_end = value + body[at + 2]
        if value_end != stop:
            return None
        found = [(flags, value, value_end)]
        if body[at + 1] == MP_REACH:
            return key, found, [], ""
        return key, [], found, ""

    def _walk(self, body: bytes, start: int, end: int) -> _Located:
        """One walk over the attribute section, looking only at the framing: where the
        MP attributes are, and the bytes of all the others (the attribute cache key)."""
        reach: list[tuple[int, int, int]] = []  # (flags, value start, value end)
        unreach: list[tuple[int, int, int]] = []
        pieces: list[tuple[int, int]] = []  # MP attributes, header included
        broken = ""
        pos = start
        while pos < end:
            if pos + 3 > end or (body[pos] & EXTENDED and pos + 4 > end):
                broken = f"{end - pos} bytes left over after the last path attribute"
                break
            flags, code = body[pos], body[pos + 1]
            if flags & EXTENDED:
                value = pos + 4
                value_end = value + (body[pos + 2] << 8 | body[pos + 3])
            else:
                value = pos + 3
                value_end = value + body[pos + 2]
            if value_end > end:
                name = NAMES.get(code, f"attribute {code}")
                broken = f"{name}: length {value_end - value} runs past the path attributes"
                break
            if code in (MP_REACH, MP_UNREACH):
                (reach if code == MP_REACH else unreach).append((flags, value, value_end))
                pieces.append((pos, value_end))
            pos = value_end
        parts, last = [], start
        for piece_start, piece_end in pieces:
            parts.append(body[last:piece_start])
            last = piece_end
        parts.append(body[last:pos])
        key = b"".join(parts)
        if len(pieces) == 1 and not broken:
            self._last_key = key
        return key, reach, unreach, broken

    def _mp_reach(
        self,
        body: bytes,
        flags: int,
        value: int,
        value_end: int,
        problems: list[str],
        ignored: list[str],
    ) -> list[tuple[IPAddress | None, int, int]]:
        """Check one MP_REACH_NLRI's header (RFC 4760 3); where its EVPN NLRI are."""
        if flags & _KIND_BITS != OPTIONAL:
            raise _Unusable(MALFORMED_MP, f"MP_REACH_NLRI flags 0x{flags:02x}")  # 7606 5.3
        if value_end - value < 5:
            raise _Unusable(MALFORMED_MP, f"MP_REACH_NLRI of {value_end - value} bytes")
        afi, safi = body[value] << 8 | body[value + 1], body[value + 2]
        nexthop_end = value + 4 + body[value + 3]
        if nexthop_end + 1 > value_end:
            raise _Unusable(MALFORMED_MP, "MP_REACH_NLRI next hop runs past the attribute")
        if afi != AFI_L2VPN or safi != SAFI_EVPN:
            ignored.append(f"family-{_family(afi, safi)}")
            return []
        packed = body[value + 4 : nexthop_end]
        nexthop = self._nexthops.get(packed)
        if nexthop is None:
            if len(packed) not in EVPN_NEXT_HOP_LENGTHS:  # RFC 7606 7.11
                raise _Unusable(
                    MALFORMED_MP, f"MP_REACH_NLRI next-hop length {len(packed)} (4, 16 or 32)"
                )
            nexthop = _remember(self._nexthops, packed, evpn_next_hop(packed))
        if isinstance(nexthop, str):
            problems.append(nexthop)
            return [(None, nexthop_end + 1, value_end)]
        return [(nexthop, nexthop_end + 1, value_end)]

    def _mp_unreach(
        self,
        body: bytes,
        flags: int,
        value: int,
        value_end: int,
        withdrawn: list[RouteKey],
        ignored: list[str],
    ) -> tuple[str, str] | None:
        """Withdraw one MP_UNREACH_NLRI's routes; its family when it withdraws nothing."""
        if flags & _KIND_BITS != OPTIONAL:
            raise _Unusable(MALFORMED_MP, f"MP_UNREACH_NLRI flags 0x{flags:02x}")  # 7606 5.3
        if value_end - value < 3:
            raise _Unusable(MALFORMED_MP, f"MP_UNREACH_NLRI of {value_end - value} bytes")
        afi, safi = body[value] << 8 | body[value + 1], body[value + 2]
        if value_end == value + 3:
            return _AFI_NAMES.get(afi, f"afi-{afi}"), _SAFI_NAMES.get(safi, f"safi-{safi}")
        if afi != AFI_L2VPN or safi != SAFI_EVPN:
            ignored.append(f"family-{_family(afi, safi)}")
            return None
        self._evpn_nlri(body, value + 3, value_end, None, None, withdrawn, ignored)
        return None

    # ------------------------------------------------------------------------- NLRI

    def _evpn_nlri(
        self,
        body: bytes,
        pos: int,
        end: int,
        nexthop: IPAddress | None,
        attrs: PathAttributes | None,
        out: list[Any],  # routes when there is a next hop, keys (withdrawals) otherwise
        ignored: list[str],
        unusable: list[_BadRoute] | None = None,  # announced routes usable.py refuses
    ) -> None:
        """Every EVPN NLRI of body[pos:end] (RFC 7432 7), all well-formed or none."""
        while pos < end:
            if pos + 2 > end:
                raise _Unusable(MALFORMED_NLRI, "1 byte left over after the last EVPN NLRI")
            rtype, length = body[pos], body[pos + 1]
            start = pos + 2
            pos = start + length
            if pos > end:
                raise _Unusable(
                    MALFORMED_NLRI, f"EVPN route type {rtype} of {length} bytes runs past its field"
                )
            if rtype == 2:
                try:
                    out.append(self._mac_ip(body, start, length, nexthop, attrs))
                except _BadRoute as bad:
                    if unusable is None:
                        raise
                    unusable.append(bad)
            elif rtype == 3:
                imet = self._imet(body, start, length)
                if nexthop is None or attrs is None:
                    out.append(imet)
                else:
                    pmsi = attrs.pmsi
                    route = ImetRoute(
                        imet, nexthop, pmsi.vni if pmsi else 0, pmsi.tunnel if pmsi else None,
                        pmsi.tunnel_type if pmsi else "none", attrs.route_targets,
                        attrs.encapsulation,
                    )  # fmt: skip
                    if unusable is not None and (problem := route_problem(route)) is not None:
                        unusable.append(_BadRoute(imet, problem))
                    else:
                        out.append(route)
            elif rtype == 5:
                prefix, vni, gateway, esi = self._prefix(body, start, length)
                if nexthop is None or attrs is None:
                    out.append(prefix)
                else:
                    out.append(PrefixRoute(
                        prefix, nexthop, vni, gateway, esi, attrs.route_targets,
                        attrs.router_mac, attrs.encapsulation,
                    ))  # fmt: skip
            elif rtype == 1:
                # Types 1 and 4, multihoming (RFC 7432 8): held, counted, shown, not acted on.
                ead = self._ead(body, start, length)
                if nexthop is None or attrs is None:
                    out.append(ead)
                else:
                    label = self._label(body, start + 22) if length >= 25 else 0
                    out.append(EadRoute(ead, nexthop, label, attrs.route_targets,
                                        attrs.encapsulation))  # fmt: skip
            elif rtype == 4:
                es = self._es(body, start, length)
                if nexthop is None or attrs is None:
                    out.append(es)
                else:
                    out.append(EsRoute(es, nexthop, attrs.route_targets, attrs.encapsulation))
            else:
                # Unknown route types: not acted on, counted.
                ignored.append(f"evpn-type-{rtype}")

    def _mac_ip(
        self,
        body: bytes,
        at: int,
        length: int,
        nexthop: IPAddress | None,
        attrs: PathAttributes | None,
    ) -> MacIpRoute | MacIpKey:
        """Type-2 (RFC 7432 7.2): RD 8, ESI 10, tag 4, MAC length 1, MAC 6, IP length 1, IP,
        one or two 3-byte labels. The route, or only its key without a next hop."""
        if length < 30:
            raise _Unusable(MALFORMED_NLRI, f"Type-2 route of {length} bytes")
        if body[at + 22] != 48:
            raise _Unusable(MALFORMED_NLRI, f"Type-2 MAC length {body[at + 22]} (48 bits)")
        ip_bits = body[at + 29]
        ip_end = at + 30 + (ip_bits >> 3)
        labels = length - 30 - (ip_bits >> 3)
        if ip_bits not in (0, 32, 128) or labels not in (3, 6):
            raise _Unusable(
                MALFORMED_NLRI, f"Type-2 route of {length} bytes with a {ip_bits}-bit IP"
            )
        if ip_bits == 0:
            ip: IPAddress | None = None
        elif ip_bits == 32:
            ip = IPv4Address(body[at + 30 : ip_end])
        else:
            ip = IPv6Address(body[at + 30 : ip_end])
        # The caches inline: this is the hot path (one call per received MAC).
        rd = self._rds.get(body[at : at + 8]) or self._rd(body, at)
        etag = int.from_bytes(body[at + 18 : at + 22])
        mac = body[at + 23 : at + 29]
        key = MacIpKey(rd, etag, mac.hex(":"), ip)
        if nexthop is None or attrs is None:
            return key
        if not is_unicast_mac(mac):
            raise _BadRoute(key, mac_problem(key) or f"Type-2 MAC {key.mac}")
        vni = self._labels.get(body[ip_end : ip_end + 3])
        if vni is None:
            vni = self._label(body, ip_end)
        return MacIpRoute(
            key, nexthop, vni, self._label(body, ip_end + 3) if labels == 6 else None,
            self._esis.get(body[at + 8 : at + 18]) or self._esi(body, at + 8),
            attrs.route_targets, attrs.mobility_seq, attrs.sticky, attrs.router_mac,
            attrs.default_gateway, attrs.encapsulation,
        )  # fmt: skip

    def _imet(self, body: bytes, at: int, length: int) -> ImetKey:
        """Type-3 (RFC 7432 7.3): RD 8, tag 4, IP length 1, originator IP."""
        ip_bits = body[at + 12] if length >= 13 else 0
        if ip_bits not in (32, 128) or length != 13 + (ip_bits >> 3):
            raise _Unusable(MALFORMED_NLRI, f"Type-3 route of {length} bytes")
        packed = body[at + 13 : at + length]
        originator = self._addresses.get(packed)
        if originator is None:
            originator = _remember(self._addresses, packed, ip_address(packed))
        return ImetKey(self._rd(body, at), int.from_bytes(body[at + 8 : at + 12]), originator)

    def _prefix(
        self, body: bytes, at: int, length: int
    ) -> tuple[PrefixKey, int, IPAddress | None, str]:
        """Type-5 (RFC 9136 3.1): RD 8, ESI 10, tag 4, prefix length 1, prefix, gateway,
        label; IPv4 (34 bytes) or IPv6 (58)."""
        bits = body[at + 22] if length >= 23 else 0
        if length == 34 and bits <= 32:
            size: int = 4
            network: type[IPv4Network] | type[IPv6Network] = IPv4Network
        elif length == 58 and bits <= 128:
            size, network = 16, IPv6Network
        else:
            raise _Unusable(MALFORMED_NLRI, f"Type-5 route of {length} bytes, a /{bits} prefix")
        gateway_at = at + 23 + size
        prefix = network((body[at + 23 : gateway_at], bits), strict=False)
        packed = body[gateway_at : gateway_at + size]
        # An all-zero gateway IP overlay index means "no gateway" (RFC 9136 3.1).
        gateway = ip_address(packed) if any(packed) else None
        key = PrefixKey(self._rd(body, at), int.from_bytes(body[at + 18 : at + 22]), prefix)
        return key, self._label(body, gateway_at + size), gateway, self._esi(body, at + 8)

    def _ead(self, body: bytes, at: int, length: int) -> EadKey:
        """Type-1 (RFC 7432 7.1): RD 8, ESI 10, tag 4, label 3. As ExaBGP, a label stack of
        any whole number of labels (none included) is taken, the first being the label."""
        if length < 22 or (length - 22) % 3:
            raise _Unusable(MALFORMED_NLRI, f"Type-1 route of {length} bytes")
        return EadKey(self._rd(body, at), self._esi(body, at + 8),
                      int.from_bytes(body[at + 18 : at + 22]))  # fmt: skip

    def _es(self, body: bytes, at: int, length: int) -> EsKey:
        """Type-4 (RFC 7432 7.4): RD 8, ESI 10, IP length 1, originator IP."""
        ip_bits = body[at + 18] if length >= 19 else 0
        if ip_bits not in (32, 128) or length != 19 + (ip_bits >> 3):
            raise _Unusable(MALFORMED_NLRI, f"Type-4 route of {length} bytes")
        packed = body[at + 19 : at + length]
        originator = self._addresses.get(packed)
        if originator is None:
            originator = _remember(self._addresses, packed, ip_address(packed))
        return EsKey(self._rd(body, at), self._esi(body, at + 8), originator)

    def _rd(self, body: bytes, at: int) -> str:
        packed = body[at : at + 8]
        text = self._rds.get(packed)
        if text is None:
            text = _remember(self._rds, packed, _rd_text(packed))
        return text

    def _esi(self, body: bytes, at: int) -> str:
        packed = body[at : at + 10]
        text = self._esis.get(packed)
        if text is None:
            text = _remember(self._esis, packed, packed.hex(":") if any(packed) else ZERO_ESI)
        return text

    def _label(self, body: bytes, at: int) -> int:
        # RFC 8365 5.1.3: the VNI is the whole 24-bit label field.
        packed = body[at : at + 3]
        value = self._labels.get(packed)
        if value is None:
            value = _remember(self._labels, packed, int.from_bytes(packed))
        return value

    # ------------------------------------------------------------------- attributes

    def _attributes(self, key: bytes) -> PathAttributes:
        attrs = decode_attributes(key)
        if attrs.problems:
            return attrs
        # One route-target tuple for every attribute set that carries the same targets.
        targets = self._targets.get(attrs.route_targets)
        if targets is None:
            _remember(self._targets, attrs.route_targets, attrs.route_targets, CACHE_SIZE)
            return attrs
        return replace(attrs, route_targets=targets)


def decode_frame(line: bytes | str) -> list[Message]:
    """Decode one frame without keeping counters or caches (tests, one-off tools)."""
    return WireDecoder().decode_frame(line)


# ------------------------------------------------------------------- pure helpers


def _rd_text(packed: bytes) -> str:
    """RFC 4364 4.2, printed as ExaBGP prints it (hex for unknown types)."""
    kind = packed[0] << 8 | packed[1]
    if kind == 0:
        return f"{packed[2] << 8 | packed[3]}:{int.from_bytes(packed[4:8])}"
    if kind == 1:
        return f"{packed[2]}.{packed[3]}.{packed[4]}.{packed[5]}:{packed[6] << 8 | packed[7]}"
    if kind == 2:
        return f"{int.from_bytes(packed[2:6])}:{packed[6] << 8 | packed[7]}"
    return "0x" + packed.hex().upper()


def _count_ipv4_prefixes(body: bytes, pos: int, end: int) -> int:
    """Prefixes in an IPv4 withdrawn-routes or NLRI field (RFC 4271 4.3, RFC 7606 5.3)."""
    count = 0
    while pos < end:
        bits = body[pos]
        if bits > 32:
            raise _Unusable(MALFORMED_NLRI, f"IPv4 prefix length {bits}")
        pos += 1 + (bits + 7) // 8
        count += 1
    if pos > end:
        raise _Unusable(MALFORMED_NLRI, "IPv4 prefix runs past its field")
    return count


def _family(afi: int, safi: int) -> str:
    return f"{_AFI_NAMES.get(afi, f'afi-{afi}')} {_SAFI_NAMES.get(safi, f'safi-{safi}')}"
