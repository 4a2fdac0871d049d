"""The Docker plugin as one object the daemon starts and stops.

    plugin = DockerPlugin(config.docker, host=lambda: daemon.config, listener=daemon_listener,
                          fabric=daemon_fabric_view)
    await plugin.start()   # recover saved networks/endpoints, then listen
    ...
    await plugin.stop()    # stop listening; devices and veths stay (containers keep running)

One socket serves both drivers: the network driver (`-d <plugin>`) and the
IPAM driver (`--ipam-driver <plugin>`). When the state file was lost and
dockerd did not answer at start, the rebuild from dockerd's view is retried
in the background until it does.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Callable
from pathlib import Path

import structlog

from evpnd.config import Config
from evpnd.docker.dockerd import DockerdClient, DockerdSource
from evpnd.docker.driver import Driver, DriverListener
from evpnd.docker.fabric import FabricView
from evpnd.docker.kernel import NetlinkKernel
from evpnd.docker.server import PluginServer
from evpnd.docker.settings import DockerConfig
from evpnd.docker.state import StateStore

log = structlog.get_logger(__name__)

# Seconds between attempts to reach dockerd for a pending rebuild: soon at first
# (dockerd usually starts right after evpnd), then every 5 s (a stat() of a socket
# path while there is none) until it answers.
REBUILD_RETRY = (1.0, 2.0, 5.0)


class DockerPlugin:
    def __init__(
        self,
        settings: DockerConfig,
        host: Callable[[], Config],
        listener: DriverListener | None = None,
        netns: str | None = None,
        socket_path: Path | None = None,
        fabric: FabricView | None = None,
        dockerd: DockerdSource | None = None,
    ) -> None:
        self.settings = settings
        self.kernel = NetlinkKernel(netns, settings.state_dir)
        self.driver = Driver(
            plugin=settings.plugin,
            host=host,
            kernel=self.kernel,
            store=StateStore(settings.state_dir, settings.plugin),
            listener=listener,
            max_endpoints_per_network=settings.max_endpoints_per_network,
            max_endpoints=settings.max_endpoints,
            fabric=fabric,
            dockerd=dockerd or DockerdClient(settings.dockerd_socket),
        )
        self.server = PluginServer(self.driver, socket_path or settings.socket_path)
        self.recovered: list[str] = []
        self._rebuild: asyncio.Task[None] | None = None

    async def start(self) -> None:
        # Recover before listening: dockerd's first call then sees the old state.
        self.recovered = await self.driver.recover()
        await self.server.start()
        if self.driver.rebuild_pending:
            self._rebuild = asyncio.create_task(self._retry_rebuild(), name="docker-rebuild")

    async def stop(self) -> None:
        if self._rebuild is not None:
            self._rebuild.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._rebuild
            self._rebuild = None
        await self.server.stop()

    async def _retry_rebuild(self) -> None:
        attempt = 0
        while self.driver.rebuild_pending:
            await asyncio.sleep(REBUILD_RETRY[min(attempt, len(REBUILD_RETRY) - 1)])
            attempt += 1
            try:
                done = await self.driver.rebuild_from_dockerd()
            except Exception as exc:  # logged, retried: the plugin keeps serving
                log.exception("docker rebuild from dockerd failed", error=str(exc))
                continue
            if done is not None:
                log.info("docker networks rebuilt from dockerd", steps=len(done),
                         attempts=attempt)
