"""`lab up` and `lab exec`: a containerlab topology realized in network namespaces.

Order of `up` (the same order containerlab uses, so a topology that works
here works there):
  1. one namespace per node (`clab-<lab>-<node>`), its `sysctls` applied;
  2. bridge nodes' bridges, then every link as a veth pair with the exact
     interface names, both ends up, containerlab's default MTU of 9500;
  3. each node's image stand-in is started, in file order (FRR daemons,
     evpnd, gobgpd, or nothing) -- like a container's entrypoint, before any exec;
  4. each node's `exec` lines, in file order, node after node.
A program started in step 3 therefore sees its interfaces but not yet the
addresses the exec lines add; exec lines that need something a program
creates (a port for the bridge evpnd makes) must wait for it, as they
would have to in containerlab.

`up` on a lab that is already up fails; `up(reconfigure=True)` first takes
the old lab down. If any step fails, everything made so far is removed
(teardown.py, which also implements `lab down`).
"""

from __future__ import annotations

import os
import shlex
import subprocess
import sys
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path

from evpnd import config as evpnd_config
from evpnd import netns
from evpnd.lab import commands, frr, gobgp, links, mosquitto, program, topology
from evpnd.lab import state as labstate
from evpnd.lab.images import EVPND_CONFIG, FRR_CONFIG, FRR_DAEMONS, MOSQUITTO_CONFIG, Role
from evpnd.lab.report import NOTES, DownReport, NodeReport, UpReport
from evpnd.lab.state import RUNTIME_ROOT, LabState, NodeState
from evpnd.lab.teardown import down, teardown
from evpnd.lab.topology import LabError, Node, Topology

__all__ = [
    "DownReport",
    "NodeCommand",
    "UpReport",
    "down",
    "find_node",
    "node_command",
    "run_in_node",
    "running_labs",
    "up",
]

EXEC_TIMEOUT = 120.0  # seconds per exec line; waits for evpnd's bridge fit well inside


@dataclass(frozen=True)
class NodeCommand:
    argv: list[str]
    env: dict[str, str]


# ---------------------------------------------------------------------------
# up


def up(
    path: str | Path, *, runtime_root: Path = RUNTIME_ROOT, reconfigure: bool = False
) -> UpReport:
    topo = topology.load(path)
    if reconfigure:
        down(topo.path, runtime_root=runtime_root)
    _preflight(topo, runtime_root)
    st = _initial_state(topo, runtime_root)
    labstate.save(st, runtime_root)
    try:
        reports = _realize(topo, st, runtime_root)
    except BaseException as exc:
        teardown(st, runtime_root)
        if isinstance(exc, LabError):
            removed = [*exc.problems, "everything `up` had made was removed"]
            raise LabError(exc.source, removed) from exc
        if isinstance(exc, Exception):
            raise LabError(
                str(topo.path), [f"up failed: {exc}", "everything `up` had made was removed"]
            ) from exc
        raise
    return UpReport(
        lab=topo.name,
        topology=topo.path,
        runtime_dir=labstate.lab_dir(topo.name, runtime_root),
        nodes=tuple(reports),
        links=len(topo.links),
        notes=(*topo.notes, *NOTES),
    )


def _preflight(topo: Topology, runtime_root: Path) -> None:
    source = str(topo.path)
    if os.geteuid() != 0:
        raise LabError(source, ["needs root (it creates network namespaces)"])
    if labstate.load(topo.name, runtime_root) is not None:
        raise LabError(source, [
            f"lab {topo.name} is already up (state in {labstate.lab_dir(topo.name, runtime_root)});"
            " run `evpnd lab down` first, or `evpnd lab up --reconfigure`"
        ])  # fmt: skip
    problems: list[str] = []
    for name, node in topo.nodes.items():
        ns = topo.netns_name(name)
        if netns.exists(ns):
            problems.append(f"node {name!r}: namespace {ns} already exists (not from this lab)")
        if node.role is Role.FRR:
            problems += [f"node {name!r}: {p}" for p in _check_frr(node)]
        elif node.role is Role.EVPND:
            problems += [f"node {name!r}: {p}" for p in _check_evpnd(node)]
        elif node.role is Role.GOBGP:
            problems += [f"node {name!r}: {p}" for p in _check_gobgp(node)]
        elif node.role is Role.MOSQUITTO:
            complaint = mosquitto.check_config(_bound(node, MOSQUITTO_CONFIG))
            problems += [f"node {name!r}: {complaint}"] if complaint else []
    if problems:
        raise LabError(source, problems)


def _check_frr(node: Node) -> list[str]:
    try:
        spec = _frr_node(node, "check", Path("/nonexistent"))
    except frr.FrrError as exc:
        return [str(exc)]
    problems = [f"{p} is missing (Debian package frr)" for p in frr.missing_programs(spec.daemons)]
    if problems:
        return problems
    if not frr.user_exists():
        return [f"user {frr.FRR_USER} does not exist (Debian package frr)"]
    if not frr.readable_by_frr(spec.config):
        problems.append(f"{spec.config} is not readable by user {frr.FRR_USER}")
    complaint = frr.check_config(spec.config)
    if complaint:
        problems.append(f"{spec.config} is not a valid FRR 8.4 config: {complaint}")
    return problems


def _check_evpnd(node: Node) -> list[str]:
    cfg = node.bound(EVPND_CONFIG)
    assert cfg is not None  # topology.py insists on the bind
    try:
        evpnd_config.load(cfg)
    except evpnd_config.ConfigError as exc:
        return [exc.render()]
    return []


def _check_gobgp(node: Node) -> list[str]:
    cfg = node.gobgp_config
    assert cfg is not None  # topology.py insists on the bind
    complaint = gobgp.check_config(cfg)
    return [f"{cfg} is not a valid gobgpd config: {complaint}"] if complaint else []


def _bound(node: Node, target: str) -> Path:
    path = node.bound(target)
    assert path is not None  # topology.py insists on the bind
    return path


def _frr_node(node: Node, pathspace: str, runtime_dir: Path) -> frr.FrrNode:
    config = node.startup_config or node.bound(FRR_CONFIG)
    assert config is not None  # topology.py insists on one of them
    daemons_file = node.bound(FRR_DAEMONS)
    text = daemons_file.read_text() if daemons_file else None
    return frr.FrrNode(
        pathspace=pathspace,
        runtime_dir=runtime_dir,
        config=config,
        daemons=frr.parse_daemons(text),
    )


def _initial_state(topo: Topology, runtime_root: Path) -> LabState:
    st = LabState(lab=topo.name, topology=str(topo.path))
    base = labstate.lab_dir(topo.name, runtime_root)
    for name, node in topo.nodes.items():
        ns = topo.netns_name(name)
        role = node.role
        st.nodes[name] = NodeState(
            name=name,
            netns=ns,
            kind=node.kind,
            image=node.image,
            role=role.value if role else None,
            runtime_dir=str(base / name),
            binds={b.target: str(b.source) for b in node.binds},
            env=dict(node.env),
            python=sys.executable if role is Role.EVPND else None,
            pathspace=ns if role is Role.FRR else None,
        )
    return st


def _realize(topo: Topology, st: LabState, runtime_root: Path) -> list[NodeReport]:
    def ns(node: str) -> str:
        return st.nodes[node].netns

    for name, node in topo.nodes.items():
        netns.create(ns(name))
        st.namespaces.append(ns(name))
        labstate.save(st, runtime_root)
        runtime_dir = Path(st.nodes[name].runtime_dir)
        if node.role is Role.FRR:
            frr.prepare_runtime_dir(runtime_dir)
        else:
            runtime_dir.mkdir(parents=True, exist_ok=True)
        for key, value in node.sysctls.items():
            _run_checked(topo, name, f"sysctl {key}", ["sysctl", "-w", f"{key}={value}"], {})

    for name, node in topo.nodes.items():
        if node.kind == "bridge":
            links.create_bridge(ns(name), name)
    for link in topo.links:
        links.create_veth(link, ns(link.a.node), ns(link.b.node))
        for end in (link.a, link.b):
            if topo.nodes[end.node].kind == "bridge":
                links.enslave(ns(end.node), end.node, end.interface)

    reports = []
    for name, node in topo.nodes.items():
        reports.append(_start(topo, node, st.nodes[name]))
        labstate.save(st, runtime_root)

    for name, node in topo.nodes.items():
        for number, line in enumerate(node.exec, start=1):
            words = _node_words(st.nodes[name], shlex.split(line))
            _run_checked(topo, name, f"exec line {number} ({line!r})", words, dict(node.env))

    st.status = "up"
    labstate.save(st, runtime_root)
    return reports


def _start(topo: Topology, node: Node, ns: NodeState) -> NodeReport:
    image = node.image or "-"
    runtime_dir = Path(ns.runtime_dir)
    env = {**os.environ, **node.env}
    if node.kind == "bridge":
        return NodeReport(node.name, ns.netns, "(kind bridge)",
                          f"bridge {node.name} inside the namespace, not on the host")  # fmt: skip
    if node.role is Role.FRR:
        assert ns.pathspace is not None
        spec = _frr_node(node, ns.pathspace, runtime_dir)
        try:
            ns.pids = frr.start(ns.netns, spec, env)
        except frr.FrrError as exc:
            raise LabError(str(topo.path), [f"node {node.name!r}: {exc}"]) from exc
        return NodeReport(node.name, ns.netns, image, (
            f"host FRR {_frr_version()}: {' '.join(spec.daemons.names)}, "
            f"-f {_relative(spec.config, topo)}, -N {spec.pathspace}; "
            f"vtysh gets --vty_socket {runtime_dir}"
        ))  # fmt: skip
    if node.role is Role.EVPND:
        cfg = node.bound(EVPND_CONFIG)
        assert cfg is not None
        try:
            ns.pids = [program.start_evpnd(ns.netns, cfg, runtime_dir, node.env)]
        except program.EvpndStartError as exc:
            raise LabError(str(topo.path), [f"node {node.name!r}: {exc}"]) from exc
        return NodeReport(node.name, ns.netns, image, (
            f"{shlex.join(program.evpnd_command(cfg))} (log {runtime_dir / 'evpnd.log'})"
        ))  # fmt: skip
    if node.role is Role.GOBGP:
        cfg = node.gobgp_config
        assert cfg is not None
        try:
            ns.pids = [gobgp.start(ns.netns, cfg, runtime_dir, node.env)]
        except gobgp.GobgpError as exc:
            raise LabError(str(topo.path), [f"node {node.name!r}: {exc}"]) from exc
        return NodeReport(node.name, ns.netns, image, (
            f"host {shlex.join(gobgp.gobgpd_command(cfg))} (log {runtime_dir / 'gobgpd.log'})"
        ))  # fmt: skip
    if node.role is Role.MOSQUITTO:
        cfg = _bound(node, MOSQUITTO_CONFIG)
        try:
            ns.pids = [mosquitto.start(ns.netns, cfg, runtime_dir, node.env)]
        except mosquitto.MosquittoError as exc:
            raise LabError(str(topo.path), [f"node {node.name!r}: {exc}"]) from exc
        return NodeReport(node.name, ns.netns, image, (
            f"host {shlex.join(mosquitto.mosquitto_command(cfg, mosquitto.program() or ''))} "
            f"(log {runtime_dir / 'mosquitto.log'})"
        ))  # fmt: skip
    return NodeReport(node.name, ns.netns, image, "namespace only, nothing started")


def _run_checked(
    topo: Topology, node: str, what: str, argv: Sequence[str], env: dict[str, str]
) -> None:
    source, netns_name = str(topo.path), topo.netns_name(node)
    try:
        result = subprocess.run(
            commands.in_netns(netns_name, argv),
            capture_output=True, text=True, timeout=EXEC_TIMEOUT, env={**os.environ, **env},
        )  # fmt: skip
    except subprocess.TimeoutExpired:
        raise LabError(source, [f"node {node!r}: {what} ran over {EXEC_TIMEOUT:.0f}s"]) from None
    except FileNotFoundError as exc:
        raise LabError(source, [f"node {node!r}: {what}: {exc}"]) from None
    if result.returncode != 0:
        output = (result.stderr.strip() or result.stdout.strip() or "no output")[-2000:]
        raise LabError(source, [f"node {node!r}: {what} failed "
                                    f"(exit {result.returncode}): {output}"])  # fmt: skip


def _relative(path: Path, topo: Topology) -> str:
    try:
        return str(path.relative_to(topo.path.parent))
    except ValueError:
        return str(path)


@cache
def _frr_version() -> str:
    try:
        out = subprocess.run(
            [str(frr.FRR_SBIN / "zebra"), "--version"], capture_output=True, text=True, timeout=10
        ).stdout
    except OSError:
        return "(unknown version)"
    first = out.splitlines()[0] if out else ""
    return first.rsplit(" ", 1)[-1] if first else "(unknown version)"


# ---------------------------------------------------------------------------
# exec and inspect


def find_node(
    node: str, *, lab: str | None = None, runtime_root: Path = RUNTIME_ROOT
) -> tuple[LabState, NodeState]:
    """A node of a running lab, by node name or namespace name."""
    if lab is not None:
        found = labstate.load(lab, runtime_root)
        if found is None:
            raise LabError(lab, [f"lab {lab} is not up"])
        labs = [found]
    else:
        labs = labstate.all_labs(runtime_root)
    matches = [(s, n) for s in labs if (n := s.node(node)) is not None]
    if not matches:
        running = ", ".join(s.lab for s in labs) or "none"
        raise LabError(node, [f"no running lab has a node {node!r} (labs up: {running})"])
    if len(matches) > 1:
        names = ", ".join(s.lab for s, _ in matches)
        raise LabError(node, [f"node {node!r} exists in several labs ({names}); name the lab"])
    return matches[0]


def node_command(
    node: str, argv: Sequence[str], *, lab: str | None = None, runtime_root: Path = RUNTIME_ROOT
) -> NodeCommand:
    """The full command line (`ip netns exec ...`) and environment for `lab exec`."""
    _, ns = find_node(node, lab=lab, runtime_root=runtime_root)
    return _node_command(ns, argv)


def _node_command(ns: NodeState, argv: Sequence[str]) -> NodeCommand:
    words = _node_words(ns, argv)
    return NodeCommand(argv=commands.in_netns(ns.netns, words), env={**os.environ, **ns.env})


def _node_words(ns: NodeState, argv: Sequence[str]) -> list[str]:
    return commands.node_argv(
        argv,
        role=ns.role,
        binds=ns.binds,
        vty_dir=ns.runtime_dir if ns.role == Role.FRR else None,
        python=ns.python,
    )


def run_in_node(
    node: str,
    argv: Sequence[str],
    *,
    lab: str | None = None,
    runtime_root: Path = RUNTIME_ROOT,
    timeout: float = 60,
) -> subprocess.CompletedProcess[str]:
    """`lab exec` with captured output, for tests and scripts."""
    command = node_command(node, argv, lab=lab, runtime_root=runtime_root)
    return subprocess.run(
        command.argv, capture_output=True, text=True, timeout=timeout, env=command.env
    )


def running_labs(runtime_root: Path = RUNTIME_ROOT) -> list[LabState]:
    return labstate.all_labs(runtime_root)
