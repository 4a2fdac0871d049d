"""What the Docker driver remembers across evpnd restarts: networks and endpoints.

One JSON file, `<state_dir>/docker-<plugin>.json`, rewritten whole after every
change (write to a temporary file, fsync, rename): a crash leaves either the
old or the new file, never half of one. Records are written *before* the
kernel objects they describe are created (`ready`/`joined` say how far the
call got), so a restart between a write and the kernel change can finish or
undo it instead of leaking a device. The driver's recovery
(`Driver.recover`) reads this file and the kernel and reconciles the two.
"""

from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

import structlog

from evpnd.config import Vni
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
        return cls(**{**body, "vni": Vni.model_validate(body["vni"])})

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
        return cls(**body)

    def but(self, **changes: Any) -> EndpointRecord:
        return replace(self, **changes)


@dataclass(slots=True)
class DriverState:
    networks: dict[str, NetworkRecord] = field(default_factory=dict)
    endpoints: dict[str, EndpointRecord] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "version": STATE_VERSION,
            "networks": [n.to_json() for _, n in sorted(self.networks.items())],
            "endpoints": [e.to_json() for _, e in sorted(self.endpoints.items())],
        }

    @classmethod
    def from_json(cls, body: dict[str, Any]) -> DriverState:
        if body.get("version") != STATE_VERSION:
            raise ValueError(f"unsupported state version {body.get('version')!r}")
        networks = [NetworkRecord.from_json(n) for n in body.get("networks", [])]
        endpoints = [EndpointRecord.from_json(e) for e in body.get("endpoints", [])]
        return cls(
            networks={n.id: n for n in networks}, endpoints={e.id: e for e in endpoints}
        )

    def copy(self) -> DriverState:
        return DriverState(dict(self.networks), dict(self.endpoints))


class StateStore:
    """Loads and saves one DriverState, atomically."""

    def __init__(self, state_dir: Path | str, plugin: str) -> None:
        self.path = Path(state_dir) / f"docker-{plugin}.json"

    def load(self) -> DriverState:
        """The saved state; empty when there is none. A corrupt file is moved aside
        (`.corrupt`) and logged: the kernel marks still let recovery clean up."""
        try:
            text = self.path.read_text()
        except FileNotFoundError:
            return DriverState()
        try:
            return DriverState.from_json(json.loads(text))
        except (ValueError, TypeError, KeyError) as exc:
            aside = self.path.with_suffix(".corrupt")
            log.error("docker state unreadable, starting empty", path=str(self.path),
                      moved_to=str(aside), error=str(exc))
            os.replace(self.path, aside)
            return DriverState()

    def save(self, state: DriverState) -> None:
        """Raises OSError (ENOSPC, a state directory another user controls) with the old
        file left in place."""
        secure_dir(self.path.parent)
        data = json.dumps(state.to_json(), indent=2, sort_keys=True) + "\n"
        # O_EXCL temporary file, fsync, rename, fsync of the directory; no symlink followed.
        write_private(self.path, data)
