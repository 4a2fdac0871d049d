"""The libnetwork remote network and IPAM driver protocol (plugin API v1), as plain models.

Pure: no I/O. Every call is an HTTP POST of a JSON body to `/<Call>` on the
plugin's unix socket; the answer is JSON with the content type
`application/vnd.docker.plugins.v1+json`. A failure is `{"Err": "..."}`; its
text reaches the user of `docker network create` / `docker run`.

Field names are libnetwork's (PascalCase). Requests ignore fields they do not
know (newer dockerds add some); responses leave out empty optional fields,
as dockerd's Go decoder expects. The shapes were checked against every call
dockerd 20.10.24 made in `shared/libnetwork/` (tests/unit/test_docker_protocol.py).

The IPAM calls (`/IpamDriver.*`, libnetwork's docs/ipam.md) are named
`IpamDriver.<Call>` here; their failures are `{"Error": "..."}` (libnetwork's
remote IPAM reads that field, not `Err`).
"""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

CONTENT_TYPE = "application/vnd.docker.plugins.v1+json"
GENERIC_OPTIONS = "com.docker.network.generic"
IMPLEMENTS = ("NetworkDriver", "IpamDriver")


class ProtocolError(ValueError):
    """A request dockerd should not have sent (bad JSON, missing fields)."""


class _Request(BaseModel):
    model_config = ConfigDict(extra="ignore", frozen=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    def body(self) -> dict[str, Any]:
        return self.model_dump(exclude_none=True)


# ---------------------------------------------------------------------------
# Requests


class IPData(_Request):
    AddressSpace: str = ""
    Pool: str
    Gateway: str | None = None  # "10.0.0.1/24": address with the pool's prefix length
    AuxAddresses: dict[str, str] | None = None


class CreateNetworkRequest(_Request):
    NetworkID: str = Field(min_length=1)
    Options: dict[str, Any] = Field(default_factory=dict)
    IPv4Data: list[IPData] = Field(default_factory=list)
    IPv6Data: list[IPData] = Field(default_factory=list)

    def generic_options(self) -> dict[str, str]:
        """The `-o KEY=VALUE` options of `docker network create`."""
        raw = self.Options.get(GENERIC_OPTIONS) or {}
        if not isinstance(raw, dict):
            raise ProtocolError(f"{GENERIC_OPTIONS} is not a mapping")
        return {str(k): v if isinstance(v, str) else json.dumps(v) for k, v in raw.items()}


class NetworkRequest(_Request):
    NetworkID: str = Field(min_length=1)


class EndpointInterface(_Request):
    Address: str = ""  # "10.0.0.2/24" or empty
    AddressIPv6: str = ""
    MacAddress: str = ""  # empty: the driver chooses


class CreateEndpointRequest(_Request):
    NetworkID: str = Field(min_length=1)
    EndpointID: str = Field(min_length=1)
    Interface: EndpointInterface | None = None
    Options: dict[str, Any] | None = None


class EndpointRequest(_Request):
    """DeleteEndpoint, Leave, EndpointOperInfo, RevokeExternalConnectivity."""

    NetworkID: str = Field(min_length=1)
    EndpointID: str = Field(min_length=1)


class JoinRequest(EndpointRequest):
    SandboxKey: str = ""
    Options: dict[str, Any] | None = None


class ProgramExternalConnectivityRequest(EndpointRequest):
    Options: dict[str, Any] | None = None


class DiscoveryRequest(_Request):
    DiscoveryType: int = 0
    DiscoveryData: Any = None


class RequestPoolRequest(_Request):
    AddressSpace: str = ""
    Pool: str = ""  # --subnet, CIDR; empty: the driver would choose
    SubPool: str = ""  # --ip-range
    Options: dict[str, str] | None = None  # --ipam-opt
    V6: bool = False


class PoolRequest(_Request):
    """ReleasePool."""

    PoolID: str = Field(min_length=1)


class RequestAddressRequest(_Request):
    PoolID: str = Field(min_length=1)
    Address: str = ""  # --ip, --gateway, --aux-address; empty: the driver chooses
    Options: dict[str, str] | None = None  # RequestAddressType for the gateway


class ReleaseAddressRequest(_Request):
    PoolID: str = Field(min_length=1)
    Address: str = ""


# ---------------------------------------------------------------------------
# Responses


class Empty(_Response):
    pass


class ErrorResponse(_Response):
    Err: str


class ActivateResponse(_Response):
    Implements: list[str] = Field(default_factory=lambda: list(IMPLEMENTS))


class CapabilitiesResponse(_Response):
    # "global" needs swarm: a plain 20.10 engine refuses to create the network.
    Scope: str = "local"
    ConnectivityScope: str = "local"


class InterfaceResponse(_Response):
    """Only what the driver chose: dockerd refuses a value it had set itself."""

    Address: str | None = None
    AddressIPv6: str | None = None
    MacAddress: str | None = None


class CreateEndpointResponse(_Response):
    Interface: InterfaceResponse | None = None

    def body(self) -> dict[str, Any]:
        # dockerd 20.10 answers an absent Interface as "no changes"; keep `{}`
        # like the recorded plugin did so the shape never surprises it.
        return {"Interface": self.Interface.body() if self.Interface else {}}


class IfaceName(_Response):
    SrcName: str  # the interface dockerd moves into the container
    DstPrefix: str = "eth"  # its name there: eth0, eth1, ...


class StaticRoute(_Response):
    Destination: str
    RouteType: int  # 0 = via NextHop, 1 = connected
    NextHop: str | None = None


class JoinResponse(_Response):
    InterfaceName: IfaceName
    Gateway: str | None = None  # without one, dockerd adds docker_gwbridge
    GatewayIPv6: str | None = None
    StaticRoutes: list[StaticRoute] | None = None
    DisableGatewayService: bool | None = None


class OperInfoResponse(_Response):
    Value: dict[str, Any] = Field(default_factory=dict)


class IpamErrorResponse(_Response):
    Error: str


class IpamCapabilitiesResponse(_Response):
    # True would make dockerd draw a random MAC before RequestAddress, replacing the
    # driver's 02:42:<IPv4> MAC; a replay is not needed, the pools are saved.
    RequiresMACAddress: bool = False
    RequiresRequestReplay: bool = False


class AddressSpacesResponse(_Response):
    LocalDefaultAddressSpace: str
    GlobalDefaultAddressSpace: str


class RequestPoolResponse(_Response):
    PoolID: str
    Pool: str  # CIDR
    Data: dict[str, str] = Field(default_factory=dict)


class RequestAddressResponse(_Response):
    Address: str  # with the pool's prefix length: "10.30.0.5/24"
    Data: dict[str, str] = Field(default_factory=dict)


# ---------------------------------------------------------------------------
# The calls

ACTIVATE = "/Plugin.Activate"
PREFIX = "/NetworkDriver."
IPAM = "IpamDriver."  # IPAM calls are named IpamDriver.<Call>

# call name -> request model (None: no body expected)
CALLS: dict[str, type[_Request] | None] = {
    "GetCapabilities": None,
    "CreateNetwork": CreateNetworkRequest,
    "AllocateNetwork": None,  # swarm only; answered as unsupported
    "FreeNetwork": None,
    "DeleteNetwork": NetworkRequest,
    "CreateEndpoint": CreateEndpointRequest,
    "DeleteEndpoint": EndpointRequest,
    "EndpointOperInfo": EndpointRequest,
    "Join": JoinRequest,
    "Leave": EndpointRequest,
    "ProgramExternalConnectivity": ProgramExternalConnectivityRequest,
    "RevokeExternalConnectivity": EndpointRequest,
    "DiscoverNew": DiscoveryRequest,
    "DiscoverDelete": DiscoveryRequest,
    IPAM + "GetCapabilities": None,
    IPAM + "GetDefaultAddressSpaces": None,
    IPAM + "RequestPool": RequestPoolRequest,
    IPAM + "ReleasePool": PoolRequest,
    IPAM + "RequestAddress": RequestAddressRequest,
    IPAM + "ReleaseAddress": ReleaseAddressRequest,
}


def call_name(path: str) -> str | None:
    """`/NetworkDriver.Join` -> `Join`; `/IpamDriver.RequestPool` -> `IpamDriver.RequestPool`;
    `/Plugin.Activate` -> `Activate`; else None."""
    if path == ACTIVATE:
        return "Activate"
    if path.startswith(PREFIX) and path[len(PREFIX) :] in CALLS:
        return path[len(PREFIX) :]
    if path.startswith("/" + IPAM) and path[1:] in CALLS:
        return path[1:]
    return None


def is_ipam(call: str) -> bool:
    return call.startswith(IPAM)


def parse_request(call: str, body: bytes | str | None) -> _Request | None:
    """The request model of `call` from its raw body; ProtocolError when malformed."""
    model = CALLS.get(call)
    if model is None:
        return None
    text = body.decode() if isinstance(body, bytes) else (body or "")
    try:
        data = json.loads(text) if text.strip() else None
    except ValueError as exc:
        raise ProtocolError(f"{call}: request body is not JSON: {exc}") from None
    if not isinstance(data, dict):
        raise ProtocolError(f"{call}: request body must be a JSON object")
    try:
        return model.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in e['loc']) or '<body>'}: {e['msg']}" for e in exc.errors()
        )
        raise ProtocolError(f"{call}: {problems}") from None


def error(message: str, call: str = "") -> dict[str, Any]:
    """The failure body of `call`: `Err` for the network driver, `Error` for the IPAM."""
    if is_ipam(call):
        return IpamErrorResponse(Error=message).body()
    return ErrorResponse(Err=message).body()
