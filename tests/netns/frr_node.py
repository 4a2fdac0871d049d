"""An FRR node of a running lab lost and brought back, as a failed router would be.

`kill` SIGKILLs every FRR daemon of the node (the kernel closes their TCP
sessions: the peers see the session end at once) and, with `links_down`, sets
the node's interfaces down so its neighbours lose carrier on those links too,
as when the box loses power. `restore` undoes it in the order a rebooting box
would: interfaces up, the node's `ip route` exec lines again (a link that went
down took its routes with it), then the daemons with their original command
lines, zebra first.
"""

from __future__ import annotations

import os
import shlex
import signal
import subprocess
from dataclasses import dataclass, field

from evpnd import netns
from evpnd.lab import topology
from tests.netns.fabric import Fabric, alive, cmdline, wait_for

FRR_DAEMON_ORDER = ("zebra", "staticd", "bgpd")


@dataclass
class FrrOutage:
    fabric: Fabric
    topology: topology.Topology
    node: str
    commands: list[list[str]] = field(default_factory=list)
    interfaces: list[str] = field(default_factory=list)

    @property
    def netns(self) -> str:
        return self.topology.netns_name(self.node)

    def daemons(self) -> dict[str, int]:
        """daemon name -> pid of the node's running FRR daemons."""
        found: dict[str, int] = {}
        for pid in netns.pids_in(self.netns):
            words = cmdline(pid).split()
            if words and alive(pid):
                name = os.path.basename(words[0])
                if name in FRR_DAEMON_ORDER:
                    found[name] = pid
        return found

    def kill(self, *, links_down: bool) -> None:
        daemons = self.daemons()
        assert set(daemons) == set(FRR_DAEMON_ORDER), daemons
        self.commands = [cmdline(daemons[name]).split() for name in FRR_DAEMON_ORDER]
        for pid in daemons.values():
            os.kill(pid, signal.SIGKILL)
        wait_for(f"{self.node}'s FRR daemons to die",
                 lambda: not any(alive(p) for p in daemons.values()), timeout=10)  # fmt: skip
        if links_down:
            self.interfaces = [link.a.interface if link.a.node == self.node else link.b.interface
                               for link in self.topology.links
                               if self.node in (link.a.node, link.b.node)]  # fmt: skip
            # All ports at once, as when a switch dies: one at a time, the node would
            # for some milliseconds take packets in on a port it can no longer route
            # out of (its link to the destination already down), and lose them.
            self._ip_batch([f"link set {name} down" for name in self.interfaces])

    def restore(self) -> None:
        # Ports and routes in one batch, for the same reason: a port up before the
        # node's routes are back would take in packets it cannot forward yet.
        routes = [shlex.join(words[1:]) for line in self.topology.nodes[self.node].exec
                  if (words := shlex.split(line))[:3] == ["ip", "route", "add"]]  # fmt: skip
        self._ip_batch([*(f"link set {name} up" for name in self.interfaces), *routes])
        for argv in self.commands:
            started = subprocess.run(["ip", "netns", "exec", self.netns, *argv],
                                     capture_output=True, text=True, timeout=30)  # fmt: skip
            assert started.returncode == 0, started.stderr
        wait_for(f"{self.node}'s FRR daemons", lambda: set(self.daemons()) == set(FRR_DAEMON_ORDER))

    def _ip_batch(self, commands: list[str]) -> None:
        done = subprocess.run(["ip", "-n", self.netns, "-batch", "-"], input="\n".join(commands),
                              capture_output=True, text=True, timeout=10)  # fmt: skip
        assert done.returncode == 0, (commands, done.stderr)
