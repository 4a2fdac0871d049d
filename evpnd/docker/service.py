"""The Docker plugin as one object the daemon starts and stops.

    plugin = DockerPlugin(config.docker, host=lambda: daemon.config, listener=daemon_listener)
    await plugin.start()   # recover saved networks/endpoints, then listen
    ...
    await plugin.stop()    # stop listening; devices and veths stay (containers keep running)
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from evpnd.config import Config
from evpnd.docker.driver import Driver, DriverListener
from evpnd.docker.kernel import NetlinkKernel
from evpnd.docker.server import PluginServer
from evpnd.docker.settings import DockerConfig
from evpnd.docker.state import StateStore


class DockerPlugin:
    def __init__(
        self,
        settings: DockerConfig,
        host: Callable[[], Config],
        listener: DriverListener | None = None,
        netns: str | None = None,
        socket_path: Path | None = None,
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
        )
        self.server = PluginServer(self.driver, socket_path or settings.socket_path)
        self.recovered: list[str] = []

    async def start(self) -> None:
        # Recover before listening: dockerd's first call then sees the old state.
        self.recovered = await self.driver.recover()
        await self.server.start()

    async def stop(self) -> None:
        await self.server.stop()
