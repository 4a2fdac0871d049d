"""sd_notify(3) protocol: addresses, datagrams, the lifecycle rules, over real unix sockets."""

from __future__ import annotations

import asyncio
import os
import secrets
import socket
import tempfile
from collections.abc import Iterator
from ipaddress import ip_address
from types import SimpleNamespace

import pytest

from evpnd import sdnotify
from evpnd.control.peers import ESTABLISHED
from evpnd.sdnotify import Notifier, ServiceNotifier, StatusFacts


class Listener:
    """What systemd does: a datagram socket the service sends to."""

    def __init__(self, sock: socket.socket, env_value: str) -> None:
        self.sock = sock
        self.env_value = env_value  # what $NOTIFY_SOCKET would hold

    def messages(self) -> list[dict[str, str]]:
        """Every datagram received so far, as KEY -> VALUE."""
        out = []
        while True:
            try:
                data = self.sock.recv(4096)
            except BlockingIOError:
                return out
            assert data.endswith(b"\n")
            out.append(dict(line.split("=", 1) for line in data.decode().splitlines()))


@pytest.fixture
def path_listener() -> Iterator[Listener]:
    directory = tempfile.mkdtemp(prefix="sdn-")  # short: sun_path is 108 bytes
    path = os.path.join(directory, "notify")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(path)
    sock.setblocking(False)
    try:
        yield Listener(sock, path)
    finally:
        sock.close()
        os.unlink(path)
        os.rmdir(directory)


@pytest.fixture
def abstract_listener() -> Iterator[Listener]:
    name = f"evpnd-test-{secrets.token_hex(4)}"
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(b"\0" + name.encode())
    sock.setblocking(False)
    try:
        yield Listener(sock, "@" + name)
    finally:
        sock.close()


def test_addresses() -> None:
    assert sdnotify.parse_address("/run/systemd/notify") == "/run/systemd/notify"
    assert sdnotify.parse_address("@abc/def") == b"\0abc/def"
    assert sdnotify.parse_address(None) is None
    assert sdnotify.parse_address("") is None
    assert sdnotify.parse_address("vsock:2:1234") is None
    assert sdnotify.parse_address("relative/path") is None


def test_datagram_lines() -> None:
    assert sdnotify.encode([("READY", "1"), ("STATUS", "a\nb")]) == b"READY=1\nSTATUS=a b\n"
    with pytest.raises(ValueError):
        sdnotify.encode([("A=B", "1")])


def test_status_text() -> None:
    text = sdnotify.status_text
    assert text(StatusFacts(True, peers=3, peers_up=3, vnis=2)) == \
        "converged, 3 of 3 peers up, 2 VNIs"
    assert text(StatusFacts(False, peers=2, peers_up=1, vnis=1)) == \
        "waiting for the peers' routes (End-of-RIB), 1 of 2 peers up, 1 VNI"
    assert text(StatusFacts(True, peers=0, peers_up=0, vnis=0, note="reload refused")) == \
        "reload refused; converged, no BGP peers, 0 VNIs"


@pytest.mark.parametrize("kind", ["path", "abstract"])
def test_sends_to_the_socket_named_in_the_environment(
    kind: str, request: pytest.FixtureRequest
) -> None:
    listener: Listener = request.getfixturevalue(f"{kind}_listener")
    env = {"NOTIFY_SOCKET": listener.env_value, "OTHER": "x"}
    notifier = Notifier.from_environment(env)
    assert env == {"OTHER": "x"}, "children (ExaBGP) must not inherit NOTIFY_SOCKET"
    assert notifier.send([("READY", "1"), ("STATUS", "up")])
    assert listener.messages() == [{"READY": "1", "STATUS": "up"}]


def test_without_a_socket_nothing_is_sent() -> None:
    notifier = Notifier.from_environment({})
    assert not notifier.enabled
    assert not notifier.send([("READY", "1")])


def test_a_vanished_manager_is_not_fatal(path_listener: Listener) -> None:
    notifier = Notifier(path_listener.env_value + "-gone")
    assert not notifier.send([("READY", "1")])
    assert not notifier.send([("STATUS", "x")])


def test_lifecycle_order(path_listener: Listener) -> None:
    clock = iter([5_000_000, 6_000_000])
    service = ServiceNotifier(Notifier(path_listener.env_value), lambda: next(clock))
    # Before READY: a reload (SIGHUP during start-up) and status lines say nothing.
    service.reloading()
    service.reloaded("x")
    service.status("y")
    assert path_listener.messages() == []

    service.ready("converged, no BGP peers, 1 VNI")
    service.status("converged, no BGP peers, 1 VNI")  # unchanged: not repeated
    service.status("converged, no BGP peers, 2 VNIs")
    service.reloading()
    service.status("computed while the reload runs")  # not said: it is reloading
    service.reloaded("converged, no BGP peers, 2 VNIs")
    service.stopping()
    service.status("after the stop")
    service.ready("after the stop")
    assert path_listener.messages() == [
        {"READY": "1", "STATUS": "converged, no BGP peers, 1 VNI"},
        {"STATUS": "converged, no BGP peers, 2 VNIs"},
        {"RELOADING": "1", "MONOTONIC_USEC": "5000", "STATUS": "reloading the config"},
        {"READY": "1", "STATUS": "converged, no BGP peers, 2 VNIs"},
        {"STOPPING": "1", "STATUS": "stopping"},
    ]


def fake_daemon(converged: bool) -> SimpleNamespace:
    peers = [SimpleNamespace(address=ip_address(a)) for a in ("192.0.2.1", "192.0.2.2")]
    records = {ip_address("192.0.2.1"): SimpleNamespace(state=ESTABLISHED),
               ip_address("192.0.2.2"): SimpleNamespace(state="connected"),
               ip_address("192.0.2.9"): SimpleNamespace(state=ESTABLISHED)}  # not configured
    return SimpleNamespace(
        cfg=SimpleNamespace(bgp=SimpleNamespace(peers=peers), vnis=[1, 2, 3]),
        stats=SimpleNamespace(converged_at=1.0 if converged else None),
        peer_tracker=SimpleNamespace(records=lambda: records),
    )


async def test_daemon_hooks_and_status_task(
    path_listener: Listener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("NOTIFY_SOCKET", path_listener.env_value)
    monkeypatch.setattr(sdnotify, "_service", None)
    daemon = fake_daemon(converged=False)
    sdnotify.started(daemon)
    assert "NOTIFY_SOCKET" not in os.environ
    task = asyncio.create_task(sdnotify.report_status(daemon, interval=0.01))
    daemon.stats.converged_at = 2.0
    messages: list[dict[str, str]] = []
    for _ in range(500):
        messages += path_listener.messages()
        if len(messages) >= 2:
            break
        await asyncio.sleep(0.01)
    assert messages[:2] == [
        {"READY": "1",
         "STATUS": "waiting for the peers' routes (End-of-RIB), 1 of 2 peers up, 3 VNIs"},
        {"STATUS": "converged, 1 of 2 peers up, 3 VNIs"},
    ]
    sdnotify.reloading(daemon)
    sdnotify.reloaded(daemon, applied=False)
    await asyncio.sleep(0.05)  # the status task keeps the refusal in front
    sdnotify.reloading(daemon)
    sdnotify.reloaded(daemon, applied=True)
    sdnotify.stopping(daemon)
    task.cancel()
    statuses = [m["STATUS"] for m in path_listener.messages()]
    refused = "reload refused (the running config is kept, see the log); " \
        "converged, 1 of 2 peers up, 3 VNIs"
    assert statuses == ["reloading the config", refused, "reloading the config",
                        "converged, 1 of 2 peers up, 3 VNIs", "stopping"]
