"""contrib/systemd/evpnd.service under a real systemd: routing between segments can switch IP
forwarding on although the unit has ProtectKernelTunables=yes (its ReadWritePaths= carve-out
for the two forwarding sysctls), and without the carve-out it cannot, saying why.

The same image and systemd container as tests/docker/test_image.py, with /proc/sys left
writable by docker (`systempaths=unconfined`): the container's own network namespace is the
one whose forwarding changes.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.docker.conftest import Dockerd, wait_for
from tests.docker.image import all_capabilities_args
from tests.docker.test_image import UNIT, Systemd, built, config, container, image

pytestmark = pytest.mark.docker

__all__ = ["built", "image"]  # module-scoped fixtures shared with test_image.py
GATEWAY = "  - {vni: 200, flood: static, flood_peers: [192.0.2.22], " \
          "gateway: {addresses: [10.200.0.1/24]}}\n"  # fmt: skip
FORWARDING = "/proc/sys/net/ipv4/ip_forward"


@pytest.fixture
def box(dockerd: Dockerd, image: str, tmp_path: Path) -> Iterator[Systemd]:
    config_dir = tmp_path / "etc-evpnd"
    config_dir.mkdir()
    (config_dir / "evpnd.yaml").write_text(config(extra=GATEWAY))
    with container(
        dockerd, *all_capabilities_args(), "--security-opt", "seccomp=unconfined",
        "--security-opt", "systempaths=unconfined",
        "--cgroupns=private", "-e", "container=docker", "--tmpfs", "/run", "--tmpfs",
        "/run/lock", "--network", "none", "-v", f"{config_dir}:/etc/evpnd",
        "-v", f"{UNIT}:/etc/systemd/system/evpnd.service:ro",
        "--entrypoint", "/lib/systemd/systemd", image,
    ) as cid:  # fmt: skip
        systemd = Systemd(dockerd, cid, config_dir)
        wait_for("systemd up", lambda: systemd.run("systemctl", "is-system-running",
                                                   check=False).strip() in ("running", "degraded"))
        systemd.run("sh", "-c", f"echo 0 > {FORWARDING}")
        yield systemd


def test_the_unit_lets_evpnd_switch_forwarding_on(box: Systemd) -> None:
    assert box.run("cat", FORWARDING).strip() == "0"
    assert box.systemctl("start", "evpnd") == 0
    assert box.run("cat", FORWARDING).strip() == "1"
    assert "10.200.0.1/24" in box.run("ip", "-br", "addr", "show", "dev", "br200")
    assert "read-only" not in box.journal().lower()


def test_without_the_carve_out_it_cannot_and_says_why(box: Systemd) -> None:
    drop_in = "/etc/systemd/system/evpnd.service.d"
    box.run("mkdir", "-p", drop_in)
    # An empty ReadWritePaths= empties the list; /run alone is given back.
    box.run("sh", "-c", f"printf '[Service]\\nReadWritePaths=\\nReadWritePaths=/run\\n' "
                        f"> {drop_in}/no-sysctl.conf")  # fmt: skip
    box.run("systemctl", "daemon-reload")
    assert box.systemctl("start", "evpnd") == 0  # the daemon runs; forwarding stays off
    assert box.run("cat", FORWARDING).strip() == "0"
    wait_for("the refusal in the journal",
             lambda: "ProtectKernelTunables=yes makes /proc/sys read-only" in box.journal())
