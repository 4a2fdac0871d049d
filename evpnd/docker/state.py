"""What the Docker driver remembers across evpnd restarts: networks, endpoints, IPAM pools.

One JSON file, `<state_dir>/docker-<plugin>.json`, rewritten whole after every
change (write to a temporary file, fsync, rename): a crash leaves either the
old or the new file, never half of one. Records are written *before* the
kernel objects they describe are created (`ready`/`joined` say how far the
call got), so a restart between a write and the kernel change can finish or
undo it instead of leaking a device. The driver's recovery
(`Driver.recover`) reads this file and the kernel and reconciles the two.

Every record is checked when it is read (`from_json`) by the validators the
driver's calls use: a record an older evpnd wrote with a value this one
refuses (a route target in other digits, a broadcast MAC, an address without
its prefix) is left out, named in `DriverState.skipped`, and the others
load; its kernel leftovers are then cleaned by their marks, like those of a
lost state file. One bad record must not keep evpnd from starting.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import structlog
from pydantic import ValidationError

from evpnd import validate
from evpnd.config import Vni
from evpnd.docker import ipam
from evpnd.statefiles import secure_dir, write_private

log = structlog.get_logger(__name__)

STATE_VERSION = 1


@dataclass(frozen=True, slots=True)
class NetworkRecord:
    id: str
    vni: Vni
    gateway_mode: str  # "external" | "local"
    ipv4_gateway: str | None = None  # "10.0.0.1/24" (interface form, as dockerd sends it)
    ipv6_gateway: str | None = None
    ipv4_pool: str | None = None
    gateway_mac: str | None = None  # set with gateway=local
    mtu: int | None = None  # the devices' MTU once they exist
    ready: bool = False  # devices created and dockerd answered

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["vni"] = self.vni.model_dump(mode="json", by_alias=True)
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> NetworkRecord:
        """ValueError (naming the field and value) when a field does not validate."""
        _known_fields(cls, body)
        try:
            vni = Vni.model_validate(body["vni"])
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(str(p) for p in e['loc'])}: {e['msg'].removeprefix('Value error, ')}"
                for e in exc.errors()
            )
            raise ValueError(f"vni: {problems}") from None
        record = cls(**{**body, "vni": vni})
        _text("id", record.id)
        if record.gateway_mode not in ("external", "local"):
            raise ValueError(f"gateway_mode {record.gateway_mode!r} is not external or local")
        for name, version in (("ipv4_gateway", 4), ("ipv6_gateway", 6)):
            value = getattr(record, name)
            if value is not None:
                _checked(name, value, lambda v, ver=version: validate.endpoint_interface(v, ver))
        if record.gateway_mac is not None:
            _checked("gateway_mac", record.gateway_mac, validate.unicast_mac)
        return record

    def but(self, **changes: Any) -> NetworkRecord:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class EndpointRecord:
    id: str
    network_id: str
    mac: str
    ipv4: str | None = None  # "10.0.0.2/24"
    ipv6: str | None = None
    host_if: str = ""  # the veth end on the bridge
    peer_if: str = ""  # the end dockerd moves into the container
    joined: bool = False  # Join started: the veth may exist

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> EndpointRecord:
        """ValueError (naming the field and value) when a field does not validate."""
        _known_fields(cls, body)
        record = cls(**body)
        _text("id", record.id)
        _text("network_id", record.network_id)
        if _checked("mac", record.mac, validate.unicast_mac) != record.mac:
            raise ValueError(f"mac {record.mac!r} is not in canonical form")
        for name, version in (("ipv4", 4), ("ipv6", 6)):
            value = getattr(record, name)
            if value is not None:
                _checked(name, value, lambda v, ver=version: validate.endpoint_interface(v, ver))
        _checked("host_if", record.host_if, validate.interface_name)
        _checked("peer_if", record.peer_if, validate.interface_name)
        return record

    def but(self, **changes: Any) -> EndpointRecord:
        return replace(self, **changes)


@dataclass(frozen=True, slots=True)
class PoolRecord:
    """An address pool of the IPAM driver (`RequestPool`) and the addresses taken from it.

    Not mutated: `but(...)` returns a changed copy (the dict included)."""

    id: str  # ipam.pool_id(space, pool, subpool): the pool is known again from the id alone
    space: str
    pool: str  # "10.30.0.0/24"
    subpool: str | None = None  # --ip-range
    refs: int = 1  # RequestPool calls not yet released
    addresses: dict[str, str] = field(default_factory=dict)  # address -> ipam.KINDS

    def to_json(self) -> dict[str, Any]:
        body = asdict(self)
        body["addresses"] = dict(sorted(self.addresses.items()))
        return body

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> PoolRecord:
        """ValueError (naming the field and value) when a field does not validate."""
        _known_fields(cls, body)
        record = cls(**body)
        _text("id", record.id)
        space, pool, subpool = _checked("id", record.id, ipam.parse_pool_id)
        if (space, str(pool), None if subpool is None else str(subpool)) != \
                (record.space, record.pool, record.subpool):
            raise ValueError(f"id {record.id!r} does not match space, pool and subpool")
        if not isinstance(record.refs, int) or isinstance(record.refs, bool) or record.refs < 1:
            raise ValueError(f"refs {record.refs!r} is not a positive integer")
        if not isinstance(record.addresses, dict):
            raise ValueError("addresses is not a mapping")
        for address, kind in record.addresses.items():
            _checked("addresses", address, lambda a, p=pool: ipam.checked_address(p, a))
            if kind not in ipam.KINDS:
                raise ValueError(f"addresses: {address}: kind {kind!r} is not one of "
                                 f"{', '.join(ipam.KINDS)}")
        return record

    def but(self, **changes: Any) -> PoolRecord:
        return replace(self, **changes)


def _known_fields(cls: type, body: Any) -> None:
    if not isinstance(body, dict):
        raise ValueError(f"a record must be a JSON object, not {type(body).__name__}")
    unknown = sorted(set(body) - {f.name for f in fields(cls)})
    if unknown:
        raise ValueError(f"unknown field(s) {', '.join(map(repr, unknown))}")


def _text(name: str, value: Any) -> None:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{name} {value!r} is not a non-empty string")


def _checked(name: str, value: Any, check: Any) -> Any:
    try:
        return check(value)
    except ValueError as exc:
        raise ValueError(f"{name}: {exc}") from None


@dataclass(slots=True)
class DriverState:
    networks: dict[str, NetworkRecord] = field(default_factory=dict)
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)
    pools: dict[str, PoolRecord] = field(default_factory=dict)  # the IPAM driver's
    # Records of the file that did not validate, left out (what and why); not saved.
    skipped: list[str] = field(default_factory=list, compare=False)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "networks": [n.to_json() for _, n in sorted(self.networks.items())],
            "endpoints": [e.to_json() for _, e in sorted(self.endpoints.items())],
            "pools": [p.to_json() for _, p in sorted(self.pools.items())],
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> DriverState:
        """The state in `body`; records that do not validate are left out and named in
        `skipped`. ValueError only when the file as a whole is not a state file."""
        if not isinstance(body, dict) or body.get("version") != STATE_VERSION:
            version = body.get("version") if isinstance(body, dict) else None
            raise ValueError(f"unsupported state version {version!r}")
        state = cls()
        for item in _records(body, "networks"):
            try:
                network = NetworkRecord.from_json(item)
            except (ValueError, TypeError, KeyError) as exc:
                state.skipped.append(f"network {_id_of(item)}: {_reason(exc)}")
                continue
            state.networks[network.id] = network
        for item in _records(body, "endpoints"):
            try:
                endpoint = EndpointRecord.from_json(item)
            except (ValueError, TypeError, KeyError) as exc:
                state.skipped.append(f"endpoint {_id_of(item)}: {_reason(exc)}")
                continue
            state.endpoints[endpoint.id] = endpoint
        for item in _records(body, "pools"):  # absent from files older than the IPAM
            try:
                pool = PoolRecord.from_json(item)
            except (ValueError, TypeError, KeyError) as exc:
                state.skipped.append(f"pool {_id_of(item)}: {_reason(exc)}")
                continue
            state.pools[pool.id] = pool
        return state

    def copy(self) -> DriverState:
        return DriverState(dict(self.networks), dict(self.endpoints), dict(self.pools))


def _records(body: dict[str, Any], name: str) -> list[Any]:
    records = body.get(name, [])
    if not isinstance(records, list):
        raise ValueError(f"{name!r} is not a list")
    return records


def _id_of(item: Any) -> str:
    ident = item.get("id") if isinstance(item, dict) else None
    return ident[:12] if isinstance(ident, str) and ident else "<no id>"


def _reason(exc: Exception) -> str:
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    return str(exc)[:300]


class StateStore:
    """Loads and saves one DriverState, atomically."""

    def __init__(self, state_dir: Path | str, plugin: str) -> None:
        self.path = Path(state_dir) / f"docker-{plugin}.json"
        # Whether the last load() read a state file: False when there was none or it was
        # unreadable (the driver then rebuilds from dockerd's own view).
        self.found = False

    def load(self) -> DriverState:
        """The saved state; empty when there is none. A corrupt file is moved aside
        (`.corrupt`) and logged: the kernel marks still let recovery clean up."""
        self.found = False
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return DriverState()
        try:
            state = DriverState.from_json(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            aside = self.path.with_suffix(".corrupt")
            log.error("docker state unreadable, starting empty", path=str(self.path),
                      moved_to=str(aside), error=str(exc))
            os.replace(self.path, aside)
            return DriverState()
        self.found = True
        return state

    def save(self, state: DriverState) -> None:
        """Raises OSError (ENOSPC, a state directory another user controls) with the old
        file left in place."""
        secure_dir(self.path.parent)
        data = json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
        # O_EXCL temporary file, fsync, rename, fsync of the directory; no symlink followed.
        write_private(self.path, data)
