"""C8: state_dir and the Docker driver's state directory on a tmpfs that fills up.

`evpnd run` with the Docker driver on, both state directories on one 256 KiB
tmpfs in a private mount namespace of the daemon's own (tests/netns/
test_state_dir.py's machinery); the control and plugin sockets outside it.
Each round fills the tmpfs while the daemon runs, then asks for what needs a
state file: a Docker network (CreateNetwork must answer a clear error, not
hang or crash), a reload that adds a VNI (devices.json cannot be written: the
reload still applies), `show status`. Then the space comes back and the same
network is created for real and deleted. The daemon must never exit, and stop
cleanly at the end.
"""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from evpnd.control import client
from tests.chaos.conftest import size
from tests.chaos.tally import Tally
from tests.conftest import require_program
from tests.netns.test_state_dir import CONFIG, EXTRA_VNI, floods, underlay

pytestmark = pytest.mark.netns

ROUNDS = size(1, 5)
GENERIC = "com.docker.network.generic"


def plugin_call(path: Path, call: str, body: dict[str, Any], timeout: float = 30) -> dict:
    """One libnetwork remote-driver call over the plugin's unix socket (HTTP/1.1)."""
    data = json.dumps(body).encode()
    request = (f"POST /{call} HTTP/1.1\r\nHost: plugin\r\nContent-Type: application/json\r\n"
               f"Content-Length: {len(data)}\r\nConnection: close\r\n\r\n").encode() + data
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
        sock.settimeout(timeout)
        sock.connect(str(path))
        sock.sendall(request)
        answer = b""
        while chunk := sock.recv(65536):
            answer += chunk
    head, _, payload = answer.partition(b"\r\n\r\n")
    assert head.startswith(b"HTTP/1.1 "), head
    return json.loads(payload or b"{}")


def network(vni: int) -> dict[str, Any]:
    return {"NetworkID": f"chaos{vni}", "Options": {GENERIC: {"VxlanId": str(vni)}},
            "IPv4Data": [{"Pool": f"10.{vni % 250}.0.0/24", "Gateway": f"10.{vni % 250}.0.1/24"}]}


def test_c8_full_state_directories_cost_errors_not_the_daemon(
    ns: str, tmp_path: Path, tally: Tally
) -> None:
    row = tally.row("C8 full state directories")
    unshare = require_program("unshare", "util-linux")
    nsenter = require_program("nsenter", "util-linux")
    underlay(ns)
    disk = tmp_path / "disk"
    disk.mkdir(mode=0o700)
    state, docker_state = disk / "state", disk / "docker"
    plugins = tmp_path / "plugins"
    plugins.mkdir(mode=0o700)
    control = tmp_path / "c.sock"
    docker = (f"docker: {{enabled: true, plugin: chaos, socket_dir: {plugins}, "
              f"state_dir: {docker_state}}}\n")
    cfg = tmp_path / "evpnd.yaml"

    def write_config(extra: str) -> None:
        cfg.write_text(CONFIG.format(state=state, socket=control, extra=extra) + docker)

    write_config("")
    log = tmp_path / "evpnd.log"
    script = (f"mount -t tmpfs -o size=256k,mode=0700 evpnd-chaos {disk} && "
              f"mkdir -m 0700 {state} {docker_state} && "
              f"exec {sys.executable} -m evpnd run -c {cfg}")
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, unshare, "--mount", "--propagation", "private",
         "sh", "-c", script], stdout=subprocess.DEVNULL, stderr=log.open("wb"),
    )  # fmt: skip

    def wait(check: Callable[[], Any], what: str, timeout: float = 30) -> Any:
        deadline = time.monotonic() + timeout
        while not (found := check()):
            if proc.poll() is not None:
                row.crashes += 1
                raise AssertionError(f"evpnd exited: {log.read_text()[-3000:]}")
            if time.monotonic() > deadline:
                raise AssertionError(f"{what}; log: {log.read_text()[-3000:]}")
            time.sleep(0.1)
        return found

    def in_mounts(*argv: str) -> None:
        subprocess.run([nsenter, "--target", str(proc.pid), "--mount", *argv], check=False,
                       capture_output=True, timeout=30)  # fmt: skip

    def status() -> dict:
        return client.request(control, {"command": "show", "what": "status"}, 10.0)

    sock = plugins / "chaos.sock"
    errors: list[str] = []
    try:
        wait(lambda: floods(ns, "vxlan100") == {"192.0.2.21"}, "the flood list")
        wait(lambda: sock.exists(), "the plugin socket")
        for n in range(ROUNDS):
            vni = 400 + n
            in_mounts("dd", "if=/dev/zero", f"of={disk}/fill", "bs=4k")
            row.faults += 1
            answer = plugin_call(sock, "NetworkDriver.CreateNetwork", network(vni))
            errors.append(answer.get("Err", ""))
            assert "could not save the driver's state" in answer.get("Err", ""), answer
            assert "No space left on device" in answer["Err"], answer
            write_config(EXTRA_VNI)
            proc.send_signal(signal.SIGHUP)
            wait(lambda: floods(ns, "vxlan300") == {"192.0.2.23"}, "the new VNI after a reload")
            wait(lambda: "could not record owned devices" in log.read_text(),
                 "the devices warning")  # fmt: skip
            assert status()["ok"]
            in_mounts("rm", "-f", f"{disk}/fill")
            assert plugin_call(sock, "NetworkDriver.CreateNetwork", network(vni)) == {}
            assert plugin_call(sock, "NetworkDriver.DeleteNetwork",
                               {"NetworkID": f"chaos{vni}"}) == {}  # fmt: skip
            write_config("")
            proc.send_signal(signal.SIGHUP)
            wait(lambda: not floods(ns, "vxlan300"), "the extra VNI gone")
            row.rounds += 1
        assert proc.poll() is None
        records = [json.loads(line) for line in log.read_text().splitlines()
                   if line.startswith("{")]  # fmt: skip
        assert not [r for r in records if r.get("event") == "task failed"]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=30) == 0
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    # What dockerd shows, without the test's temporary path.
    row.notes["docker_error"] = json.dumps(errors[0].replace(str(docker_state), "DIR")
                                           if errors else "")
