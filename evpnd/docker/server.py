"""The plugin's HTTP side: aiohttp on a unix socket, one POST route per libnetwork call.

dockerd finds the plugin by its socket, `/run/docker/plugins/<name>.sock`, or
by a spec file (`/etc/docker/plugins/<name>.spec` holding `unix://<path>`),
activates it once (`/Plugin.Activate`) and then posts JSON. `dispatch()` is
the whole protocol mapping and needs no socket (the contract tests call it);
`PluginServer` only carries bytes. Driver refusals are answered with status
200 and `{"Err": ...}` like the plugin recorded in shared/libnetwork/ (dockerd
shows the text), IPAM refusals with `{"Error": ...}` (what libnetwork's remote
IPAM reads); malformed requests and unknown calls get 400/404 with `Err`.
"""

from __future__ import annotations

import contextlib
import json
import os
import stat
from pathlib import Path
from typing import Any

import structlog
from aiohttp import web

from evpnd.docker import protocol as p
from evpnd.docker.driver import Driver, DriverError
from evpnd.docker.ipam import IpamError
from evpnd.docker.ipamdriver import IpamDriver

log = structlog.get_logger(__name__)


async def dispatch(
    driver: Driver, path: str, body: bytes | str | None
) -> tuple[int, dict[str, Any]]:
    """One plugin call: (HTTP status, JSON body)."""
    call = p.call_name(path)
    if call is None:
        return 404, p.error(f"evpnd: unknown plugin call {path}")
    try:
        request = p.parse_request(call, body)
        return 200, await _answer(driver, call, request)
    except p.ProtocolError as exc:
        log.warning("docker plugin: bad request", call=call, error=str(exc))
        return 400, p.error(f"evpnd: {exc}")
    except (DriverError, IpamError) as exc:
        log.warning("docker plugin: refused", call=call, error=str(exc))
        return 200, p.error(str(exc), call)
    except Exception as exc:
        log.exception("docker plugin: internal error", call=call)
        return 200, p.error(f"evpnd: internal error in {call}: {exc}", call)


async def _answer(driver: Driver, call: str, request: Any) -> dict[str, Any]:
    match call:
        case "Activate":
            return p.ActivateResponse().body()
        case "GetCapabilities":
            return p.CapabilitiesResponse().body()
        case "CreateNetwork":
            await driver.create_network(request)
            return p.Empty().body()
        case "DeleteNetwork":
            await driver.delete_network(request.NetworkID)
            return p.Empty().body()
        case "CreateEndpoint":
            iface = await driver.create_endpoint(request)
            return p.CreateEndpointResponse(Interface=iface).body()
        case "Join":
            return (await driver.join(request.NetworkID, request.EndpointID)).body()
        case "Leave":
            await driver.leave(request.NetworkID, request.EndpointID)
            return p.Empty().body()
        case "DeleteEndpoint":
            await driver.delete_endpoint(request.NetworkID, request.EndpointID)
            return p.Empty().body()
        case "EndpointOperInfo":
            value = driver.endpoint_oper_info(request.NetworkID, request.EndpointID)
            return p.OperInfoResponse(Value=value).body()
        case "ProgramExternalConnectivity" | "RevokeExternalConnectivity":
            return p.Empty().body()  # no port mappings: containers are reached directly
        case "DiscoverNew" | "DiscoverDelete":
            return p.Empty().body()  # node discovery is BGP's job
        case "AllocateNetwork" | "FreeNetwork":
            raise DriverError("evpnd: swarm-scope networks are not supported (scope is local)")
        case "IpamDriver.GetCapabilities":
            return IpamDriver(driver).capabilities().body()
        case "IpamDriver.GetDefaultAddressSpaces":
            return IpamDriver(driver).address_spaces().body()
        case "IpamDriver.RequestPool":
            return (await IpamDriver(driver).request_pool(request)).body()
        case "IpamDriver.ReleasePool":
            await IpamDriver(driver).release_pool(request.PoolID)
            return p.Empty().body()
        case "IpamDriver.RequestAddress":
            return (await IpamDriver(driver).request_address(request)).body()
        case "IpamDriver.ReleaseAddress":
            await IpamDriver(driver).release_address(request.PoolID, request.Address)
            return p.Empty().body()
    raise DriverError(f"evpnd: unhandled call {call}")  # pragma: no cover


class PluginServer:
    """Serves `driver` on `socket_path` (a unix socket, mode 0660, root's group)."""

    def __init__(self, driver: Driver, socket_path: Path | str) -> None:
        self.driver = driver
        self.socket_path = Path(socket_path)
        self.calls = 0
        self._runner: web.AppRunner | None = None

    async def start(self) -> None:
        app = web.Application()
        app.router.add_post("/{call:.*}", self._handle)
        runner = web.AppRunner(app, access_log=None, handle_signals=False)
        await runner.setup()
        self.socket_path.parent.mkdir(parents=True, exist_ok=True)
        _remove_stale_socket(self.socket_path)
        site = web.UnixSite(runner, str(self.socket_path))
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        os.chmod(self.socket_path, 0o660)
        self._runner = runner
        log.info("docker plugin listening", socket=str(self.socket_path))

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None
        with contextlib.suppress(FileNotFoundError):
            if stat.S_ISSOCK(os.lstat(self.socket_path).st_mode):
                os.unlink(self.socket_path)

    async def _handle(self, request: web.Request) -> web.Response:
        self.calls += 1
        body = await request.read()
        status, answer = await dispatch(self.driver, request.path, body)
        log.debug("docker plugin call", path=request.path, status=status)
        # Exactly the plugin media type (json_response would append "; charset=utf-8").
        return web.Response(body=json.dumps(answer).encode(), status=status,
                            headers={"Content-Type": p.CONTENT_TYPE})


def _remove_stale_socket(path: Path) -> None:
    """A socket left by a previous run; anything that is not a socket is an error."""
    try:
        mode = os.lstat(path).st_mode
    except FileNotFoundError:
        return
    if not stat.S_ISSOCK(mode):
        raise FileExistsError(f"{path} exists and is not a socket")
    os.unlink(path)


def write_spec(spec_dir: Path | str, plugin: str, socket_path: Path | str) -> Path:
    """A plugin spec file (`unix://<socket>`) for a socket outside /run/docker/plugins."""
    path = Path(spec_dir) / f"{plugin}.spec"
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(f"unix://{socket_path}\n")
    os.replace(tmp, path)
    return path
