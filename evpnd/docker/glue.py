"""The Docker network driver wired into the daemon (the daemon's `DriverListener`).

Glue only, like evpnd/services.py: the daemon calls `start`, `stop`,
`activate` and asks `effective` for its VNIs; the driver calls the listener
methods during dockerd's calls.

* The daemon's VNIs are the config file's VNIs plus those of the Docker
  networks (`effective`): RIB policies, devices, the learner, Type-3 routes
  and the device reconcile all see both, so a reload or a restart never
  deletes a Docker network's devices.
* `vni_added` / `vni_removed` apply like a reload that adds or removes a VNI
  (the daemon's own reload path, under its reload lock).
* `endpoint_added`: the container's MAC and each of its IPs advertised at once
  (MAC-only and MAC+IP Type-2), like an MQTT registration; `endpoint_removed`
  withdraws them. The bridge learning the same MAC later changes nothing (the
  RIB already holds it); the bridge forgetting it does not withdraw it.
* `gateway=local`: the network's VNI carries the gateway as an anycast
  `gateway:` (`effective`), exactly as a configured VNI's does (README
  "Routing between segments"): the same MAC and addresses on the bridge of
  every host, the MAC+IP routes with the default-gateway community, a
  received route for that MAC never installed, and routing into the L3VNI
  when there is one.
* The fabric view (`evpnd.docker.fabric.FabricView`) the driver and the IPAM
  driver ask: other VTEPs' claims on addresses and MACs, from the RIB's
  received Type-2 routes (best path or not), and the VTEPs of a VNI. While
  live, the containers' addresses are checked against it every
  `COLLISION_SCAN` seconds: a collision that appears after a container
  started (a host given the same address by hand) is logged, counted and
  shown (`status()`, `evpnd show status`, metrics).

Until `activate()` (daemon start-up, while the driver recovers its state)
the events are only recorded; `activate` puts the recovered endpoints into
the RIB once the daemon runs with the effective config.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncIterator, Callable, Coroutine, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import structlog

from evpnd.config import Config, Vni
from evpnd.docker.driver import EndpointInfo, VniInfo
from evpnd.docker.fabric import Claim, conflicts, describe
from evpnd.l3.settings import AnycastGateway
from evpnd.model import IPAddress, normalize_mac
from evpnd.rib import Rib, RibChanges

log = structlog.get_logger(__name__)

COLLISION_SCAN = 1.0  # seconds between checks of the containers' addresses against the RIB


class VniConflict(ValueError):
    """The config file and a Docker network claim the same VNI or device."""


@dataclass(frozen=True)
class DaemonHooks:
    """What the glue needs from the daemon."""

    file_config: Callable[[], Config]  # the config file's config (the driver's `host`)
    rib: Callable[[], Rib]
    apply: Callable[[RibChanges], None]  # RIB changes -> speaker and dataplane
    vnis_changed: Callable[[], Coroutine[Any, Any, None]]  # re-apply the effective config
    flush: Callable[[], Coroutine[Any, Any, None]]  # until the speaker has taken our routes


class DockerGlue:
    def __init__(self, hooks: DaemonHooks, netns: str | None = None,
                 socket_path: Path | None = None) -> None:
        self.hooks = hooks
        self.netns = netns
        self.socket_path = socket_path
        self.plugin: Any = None  # evpnd.docker.service.DockerPlugin while enabled
        self._live = False
        self._networks: dict[str, VniInfo] = {}
        self._endpoints: dict[str, EndpointInfo] = {}
        self._collisions: dict[str, tuple[Claim, ...]] = {}  # endpoint id -> claims on it
        self._scan: asyncio.Task[None] | None = None

    # ------------------------------------------------------------ lifecycle

    async def start(self, cfg: Config) -> None:
        """Recover and serve when `docker.enabled`; events are recorded until `activate`."""
        if not cfg.docker.enabled:
            return
        from evpnd.docker.service import DockerPlugin

        plugin = DockerPlugin(cfg.docker, host=self.hooks.file_config, listener=self,
                              netns=self.netns, socket_path=self.socket_path, fabric=self)
        await plugin.start()
        self.plugin = plugin
        self._scan = asyncio.create_task(self._scan_loop(), name="docker-collisions")
        log.info("docker network driver serving", socket=str(plugin.server.socket_path),
                 plugin=cfg.docker.plugin, networks=len(self._networks),
                 endpoints=len(self._endpoints), recovered=plugin.recovered)

    def activate(self) -> None:
        """The daemon runs with `effective(...)`: recovered endpoints go into the RIB."""
        self._live = True
        for info in list(self._endpoints.values()):
            self._advertise(info)

    async def stop(self) -> None:
        """Stop serving; devices, veths and the state file stay for the next evpnd."""
        plugin, self.plugin = self.plugin, None
        self._live = False
        scan, self._scan = self._scan, None
        if scan is not None:
            scan.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await scan
        if plugin is not None:
            await plugin.stop()

    @contextlib.asynccontextmanager
    async def serialized(self) -> AsyncIterator[None]:
        """No Docker call runs meanwhile (the driver's own lock; a no-op when disabled).

        Lock order: the driver's, then the daemon's reload lock (a Docker call
        holds the driver's lock when the listener takes the reload lock)."""
        if self.plugin is None:
            yield
            return
        async with self.plugin.driver.lock:
            yield

    # ------------------------------------------------------------ the daemon's view

    @property
    def enabled(self) -> bool:
        return self.plugin is not None

    def vnis(self) -> list[Vni]:
        return [n.vni for n in sorted(self._networks.values(), key=lambda n: n.vni.vni)]

    def networks(self) -> list[VniInfo]:
        return sorted(self._networks.values(), key=lambda n: n.vni.vni)

    def effective(self, file_cfg: Config, *, strict: bool = True) -> Config:
        """The config file's VNIs plus the Docker networks'.

        A clash (same VNI or device name) raises VniConflict with `strict`
        (a reload is refused); otherwise the file wins and the network is left
        out with an error logged (start-up: the file was changed meanwhile).
        """
        if not self._networks:
            return file_cfg
        vnis = list(file_cfg.vnis)
        taken = {v.vni for v in vnis}
        devices = {name for v in vnis for name in (v.bridge_name, v.vxlan_name)}
        for net in self.networks():
            vni = net.vni
            clash = None
            if vni.vni in taken:
                clash = f"VNI {vni.vni} of docker network {net.network_id[:12]} is in the config"
            elif {vni.bridge_name, vni.vxlan_name} & devices:
                clash = (f"devices {vni.bridge_name}/{vni.vxlan_name} of docker network "
                         f"{net.network_id[:12]} are used by the config")
            if clash is not None:
                if strict:
                    raise VniConflict(clash)
                log.error("docker network left out: the config file claims it", problem=clash)
                continue
            vnis.append(_with_gateway(net))
            taken.add(vni.vni)
            devices.update((vni.bridge_name, vni.vxlan_name))
        return file_cfg.model_copy(update={"vnis": vnis})

    def registered(self, vni: int, mac: str, ip: IPAddress | None = None) -> bool:
        """A container's MAC (and IP) that stays advertised whatever the bridge learns."""
        mac = normalize_mac(mac)
        return any(
            e.vni == vni and e.mac == mac and (ip is None or ip in e.ips)
            for e in self._endpoints.values()
        )

    def endpoints(self) -> list[EndpointInfo]:
        return list(self._endpoints.values())

    def status(self) -> dict[str, Any] | None:
        """The driver for `show status` and metrics; None when `docker.enabled` is off."""
        if self.plugin is None:
            return None
        driver = self.plugin.driver
        pools = driver.state.pools.values()
        return {
            "plugin": driver.plugin,
            "networks": len(self._networks),
            "endpoints": len(driver.state.endpoints),
            "max_endpoints_per_network": driver.max_endpoints_per_network,
            "max_endpoints": driver.max_endpoints,
            "counters": driver.counters.as_dict(),
            "skipped": list(driver.counters.skipped),
            "ipam_pools": len(pools),
            "ipam_addresses": sum(len(p.addresses) for p in pools),
            "rebuild_pending": driver.rebuild_pending,
            "collisions": self.collisions(),
        }

    def collisions(self) -> list[str]:
        """The running containers whose address or MAC another VTEP advertises now."""
        out = []
        for endpoint_id, claims in sorted(self._collisions.items()):
            info = self._endpoints.get(endpoint_id)
            if info is None:
                continue
            ips = ",".join(str(ip) for ip in info.ips) or "-"
            out.append(f"endpoint {endpoint_id[:12]} {ips} ({info.mac}) on VNI {info.vni}: "
                       f"also {describe(claims)}")
        return out

    # ------------------------------------------------------------ FabricView (the RIB's)

    def claims(self, vni: int) -> Sequence[Claim]:
        return [Claim(vtep, mac, ip) for ip, mac, vtep in self.hooks.rib().ip_claims(vni)]

    def claims_on(self, vni: int, mac: str | None, ips: Sequence[IPAddress]) -> Sequence[Claim]:
        rib = self.hooks.rib()
        found = [Claim(vtep, m, ip) for address in ips
                 for ip, m, vtep in rib.ip_claims(vni, address)]
        if mac is not None:
            found += [Claim(vtep, normalize_mac(mac)) for vtep in rib.mac_claims(vni, mac)]
        return found

    def vteps(self, vni: int) -> Sequence[IPAddress]:
        return self.hooks.rib().vteps(vni).get(vni, ())

    def scan_collisions(self) -> dict[str, tuple[Claim, ...]]:
        """Check every container against the RIB; a new collision is logged and counted,
        one that ended is logged. Returns the collisions now."""
        found: dict[str, tuple[Claim, ...]] = {}
        for info in self._endpoints.values():
            claims = conflicts(info.mac, info.ips, self.claims_on(info.vni, info.mac, info.ips))
            if claims:
                found[info.endpoint_id] = tuple(claims)
        for endpoint_id, claims in found.items():
            if self._collisions.get(endpoint_id) == claims:
                continue
            info = self._endpoints[endpoint_id]
            if endpoint_id not in self._collisions and self.plugin is not None:
                self.plugin.driver.counters.collisions_detected += 1
            log.error("docker container's address is also advertised by another VTEP",
                      endpoint=endpoint_id[:12], vni=info.vni, mac=info.mac,
                      ips=[str(ip) for ip in info.ips], claimed_by=describe(claims))
        for endpoint_id in self._collisions.keys() - found.keys():
            log.info("docker address collision ended", endpoint=endpoint_id[:12])
        self._collisions = found
        return found

    async def _scan_loop(self) -> None:
        while True:
            await asyncio.sleep(COLLISION_SCAN)
            if not self._live:
                continue  # until activate(): the RIB has no routes yet
            try:
                self.scan_collisions()
            except Exception as exc:  # a bug here must not end the daemon's task
                log.exception("docker collision scan failed", error=str(exc))

    # ------------------------------------------------------------ DriverListener

    async def vni_added(self, info: VniInfo) -> None:
        self._networks[info.network_id] = info
        if self._live:
            log.info("docker network: VNI added", vni=info.vni.vni, network=info.network_id[:12],
                     gateway=None if info.gateway is None else info.gateway.mac)
            await self.hooks.vnis_changed()

    async def vni_removed(self, info: VniInfo) -> None:
        if self._networks.pop(info.network_id, None) is None:
            return
        for key in [k for k, e in self._endpoints.items() if e.network_id == info.network_id]:
            await self.endpoint_removed(self._endpoints[key])  # normally gone already
        if self._live:
            log.info("docker network: VNI removed", vni=info.vni.vni,
                     network=info.network_id[:12])
            await self.hooks.vnis_changed()

    async def endpoint_added(self, info: EndpointInfo) -> None:
        info = _normalized(info)
        self._endpoints[info.endpoint_id] = info
        if not self._live:
            return
        self._advertise(info)
        # Join returns once ExaBGP has the routes: they are on their way to
        # the peers before the container's process starts.
        await self.hooks.flush()

    async def endpoint_removed(self, info: EndpointInfo) -> None:
        info = self._endpoints.pop(info.endpoint_id, None) or _normalized(info)
        if not self._live:
            return
        rib = self.hooks.rib()
        if self.registered(info.vni, info.mac):
            # Another endpoint holds the MAC (never seen, but cheap): drop only its IPs.
            for ip in info.ips:
                if not self.registered(info.vni, info.mac, ip):
                    self.hooks.apply(rib.local_mac_removed(info.vni, info.mac, ip))
            return
        log.info("local mac gone (docker)", vni=info.vni, mac=info.mac,
                 endpoint=info.endpoint_id[:12])
        self.hooks.apply(rib.local_mac_removed(info.vni, info.mac))

    # ------------------------------------------------------------ internals

    def _advertise(self, info: EndpointInfo) -> None:
        if info.vni not in {v.vni for v in self.hooks.file_config().vnis} | {
                n.vni.vni for n in self._networks.values()}:
            log.warning("docker endpoint on an unknown VNI ignored", vni=info.vni,
                        endpoint=info.endpoint_id[:12])
            return
        rib = self.hooks.rib()
        changes, _ = rib.local_mac_added(info.vni, info.mac)
        self.hooks.apply(changes)
        for ip in info.ips:
            changes, _ = rib.local_mac_added(info.vni, info.mac, ip)
            self.hooks.apply(changes)
        log.info("local mac (docker)", vni=info.vni, mac=info.mac,
                 ips=[str(ip) for ip in info.ips], endpoint=info.endpoint_id[:12],
                 port=info.port)


def _with_gateway(net: VniInfo) -> Vni:
    """A network's VNI with its `gateway=local` gateway as the VNI's anycast gateway."""
    gateway = net.gateway
    if gateway is None:
        return net.vni
    addresses = [str(i) for i in (gateway.ipv4, gateway.ipv6) if i is not None]
    try:
        anycast = AnycastGateway(addresses=addresses, mac=gateway.mac)
    except ValueError as exc:  # pydantic's ValidationError is one
        log.error("docker network gateway left out", network=net.network_id[:12],
                  error=str(exc))  # fmt: skip
        return net.vni
    return net.vni.model_copy(update={"gateway": anycast})


def _normalized(info: EndpointInfo) -> EndpointInfo:
    mac = normalize_mac(info.mac)
    if mac == info.mac:
        return info
    return EndpointInfo(info.network_id, info.endpoint_id, info.vni, mac, info.ips, info.port)
