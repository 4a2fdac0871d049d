"""The evpnd container image (containerlab/Dockerfile), built for real, and
contrib/systemd/evpnd.service running under a real systemd inside it.

The image is built by a private dockerd (tests/docker/conftest.py) from a
Debian 12 base made by debootstrap and cached in .cache/image/, with evpnd's
dependencies from a local wheel directory (tests/docker/image.py): no
registry. Then:

- `evpnd --version` and `evpnd check-config` (the default config file) run
  in it; the build context is small (.dockerignore); tini is PID 1.
- A container runs `evpnd run` (CAP_NET_ADMIN only): it creates its VNI
  devices, the HEALTHCHECK (`evpnd show status`) turns it healthy, and
  `docker stop` ends it with status 0. Without a daemon it turns unhealthy.
- systemd boots in a container of the same image (the base has systemd) with
  the unit file as it is in the repository: `systemctl start` returns once
  evpnd said READY=1 (the control socket answers, the devices exist), the
  hardening is in force on the running daemon, STATUS follows convergence,
  `systemctl reload` applies a config and fails on a refused one (logged at
  error priority in the journal: evpnd's `<N>` prefixes), `systemctl
  restart` and stop + start keep the same ExaBGP (KillMode=process,
  RuntimeDirectoryPreserve=yes: the hand-over).
"""

from __future__ import annotations

import contextlib
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from evpnd import __version__
from tests.conftest import REPO, require_program
from tests.docker.conftest import Dockerd, wait_for
from tests.docker.image import all_capabilities_args, debian_base, serve_directory, wheelhouse

pytestmark = pytest.mark.docker

BASE_TAG = "evpnd-base:bookworm-test"
IMAGE_TAG = "evpnd:test"
UNIT = REPO / "contrib" / "systemd" / "evpnd.service"
MAX_CONTEXT_MB = 10.0  # evpnd/ and three files; the virtualenv alone is hundreds of MB
WAIT = 60.0

CONFIG = """router_id: 192.0.2.11
asn: {asn}
vtep: {{address: 127.0.0.1, device: lo}}
logging: {{level: info, format: json}}
bgp:
  eor_timeout: 2
  restart_hold: 60
  peers:
    - {{address: 127.0.0.2, remote_asn: 65000}}
vnis:
  - {{vni: 100, flood: static, flood_peers: [192.0.2.21]}}
{extra}"""
EXTRA_VNI = "  - {vni: 300, flood: static, flood_peers: [192.0.2.23]}\n"


def config(asn: int = 65000, extra: str = "") -> str:
    return CONFIG.format(asn=asn, extra=extra)


@pytest.fixture(scope="module")
def built(dockerd: Dockerd) -> tuple[str, str]:
    """(image tag, `docker build` output)."""
    debootstrap = require_program("debootstrap", "debootstrap")
    base = debian_base(debootstrap)
    dockerd.run("import", str(base), BASE_TAG, timeout=600)
    with serve_directory(wheelhouse()) as url:
        done = dockerd.run(
            "build", "--network", "host", "-f", str(REPO / "containerlab" / "Dockerfile"),
            "--build-arg", f"BASE={BASE_TAG}", "--build-arg", "PIP_NO_INDEX=1",
            "--build-arg", f"PIP_FIND_LINKS={url}", "-t", IMAGE_TAG, str(REPO), timeout=1200)
    return IMAGE_TAG, done.stdout


@pytest.fixture(scope="module")
def image(built: tuple[str, str]) -> str:
    return built[0]


@contextlib.contextmanager
def container(dockerd: Dockerd, *args: str) -> Iterator[str]:
    cid = dockerd.run("run", "-d", *args).stdout.strip()
    try:
        yield cid
    finally:
        dockerd.run("rm", "-f", cid, check=False, timeout=60)


def test_build_context_leaves_the_rest_of_the_repository_out(built: tuple[str, str]) -> None:
    found = re.search(r"Sending build context to Docker daemon\s+([\d.]+)([kMG]?B)", built[1])
    assert found, built[1][:500]
    size = float(found.group(1)) * {"B": 1e-6, "kB": 1e-3, "MB": 1, "GB": 1e3}[found.group(2)]
    assert size < MAX_CONTEXT_MB, found.group(0)


def test_version_and_check_config(dockerd: Dockerd, image: str, tmp_path: Path) -> None:
    assert dockerd.run("run", "--rm", image, "--version").stdout == f"evpnd {__version__}\n"
    good, bad = tmp_path / "good.yaml", tmp_path / "bad.yaml"
    good.write_text(config())
    bad.write_text(config(asn=0))
    # No file argument: the default config file, /etc/evpnd/evpnd.yaml.
    done = dockerd.run("run", "--rm", "-v", f"{good}:/etc/evpnd/evpnd.yaml:ro", image,
                       "check-config")
    assert done.stdout == "ok\n"
    done = dockerd.run("run", "--rm", "-v", f"{bad}:/etc/evpnd/evpnd.yaml:ro", image,
                       "check-config", check=False)
    assert done.returncode == 1 and "/etc/evpnd/evpnd.yaml: 1 error(s)" in done.stdout
    assert "asn" in done.stdout


def test_image_settings(dockerd: Dockerd, image: str) -> None:
    settings = dockerd.inspect(image)[0]["Config"]
    assert settings["Entrypoint"] == ["/usr/bin/tini", "--", "evpnd"]
    assert settings["Cmd"] == ["run"]
    assert settings["Healthcheck"]["Test"] == ["CMD", "evpnd", "show", "status"]


def health(dockerd: Dockerd, cid: str) -> dict:
    return dockerd.inspect(cid)[0]["State"].get("Health") or {}


def test_runs_healthy_and_stops_cleanly(dockerd: Dockerd, image: str, tmp_path: Path) -> None:
    cfg = tmp_path / "evpnd.yaml"
    cfg.write_text(config())
    attach = REPO / "containerlab" / "configs" / "common" / "attach-ports.sh"
    with container(dockerd, "--cap-add", "NET_ADMIN", "--network", "none",
                   "--health-interval", "1s", "-v", f"{cfg}:/etc/evpnd/evpnd.yaml:ro",
                   "-v", f"{attach}:/lab/attach-ports.sh:ro", image) as cid:
        # What a topology's exec lines do once the entrypoint started: wait for
        # evpnd's bridge, make a link a port of it (the image has sh, ip, sleep).
        dockerd.run("exec", cid, "ip", "link", "add", "eth1", "type", "veth", "peer", "eth9")
        dockerd.run("exec", cid, "sh", "/lab/attach-ports.sh", "br100", "eth1")
        port = json.loads(dockerd.run("exec", cid, "ip", "-j", "-d", "link", "show", "eth1")
                          .stdout)[0]
        assert port["master"] == "br100"
        assert dockerd.run("exec", cid, "ip", "link", "show", "vxlan100").returncode == 0
        wait_for("healthy", lambda: health(dockerd, cid).get("Status") == "healthy", WAIT)
        assert f"evpnd {__version__}, pid" in health(dockerd, cid)["Log"][-1]["Output"]
        init = dockerd.run("exec", cid, "cat", "/proc/1/cmdline").stdout.split("\0")
        assert init[:3] == ["/usr/bin/tini", "--", "evpnd"]
        dockerd.run("stop", "-t", "30", cid, timeout=60)
        state = dockerd.inspect(cid)[0]["State"]
        assert (state["Status"], state["ExitCode"]) == ("exited", 0)
        logs = dockerd.run("logs", cid).stderr
        assert '"event": "evpnd stopping: handing the BGP sessions over"' in logs


def test_healthcheck_fails_without_a_daemon(dockerd: Dockerd, image: str, tmp_path: Path) -> None:
    cfg = tmp_path / "evpnd.yaml"
    cfg.write_text(config())
    with container(dockerd, "--network", "none", "--health-interval", "1s",
                   "--health-retries", "1", "--health-start-period", "1s", "--entrypoint", "sleep",
                   "-v", f"{cfg}:/etc/evpnd/evpnd.yaml:ro", image, "600") as cid:
        wait_for("unhealthy", lambda: health(dockerd, cid).get("Status") == "unhealthy", WAIT)
        assert "evpnd is not running" in health(dockerd, cid)["Log"][-1]["Output"]


# ---------------------------------------------------------------- the unit under systemd


class Systemd:
    """A container whose PID 1 is systemd, with the repository's unit installed."""

    def __init__(self, dockerd: Dockerd, cid: str, config_dir: Path) -> None:
        self.dockerd = dockerd
        self.cid = cid
        self.config = config_dir / "evpnd.yaml"

    def run(self, *args: str, check: bool = True) -> str:
        return self.dockerd.run("exec", self.cid, *args, check=check).stdout

    def systemctl(self, *args: str) -> int:
        return self.dockerd.run("exec", self.cid, "systemctl", *args, check=False).returncode

    def prop(self, name: str) -> str:
        return self.run("systemctl", "show", "--value", "-p", name, "evpnd").strip()

    def speaker_pid(self) -> int:
        return int(json.loads(self.run("evpnd", "show", "status", "--json"))["speaker"]["pid"])

    def journal(self, *args: str) -> str:
        return self.run("journalctl", "-u", "evpnd", "--no-pager", "-o", "cat", *args)

    def alive(self, pid: int) -> bool:
        return self.dockerd.run("exec", self.cid, "test", "-d", f"/proc/{pid}",
                                check=False).returncode == 0


@pytest.fixture
def systemd(dockerd: Dockerd, image: str, tmp_path: Path) -> Iterator[Systemd]:
    config_dir = tmp_path / "etc-evpnd"
    config_dir.mkdir()
    (config_dir / "evpnd.yaml").write_text(config())
    with container(
        dockerd, *all_capabilities_args(), "--security-opt", "seccomp=unconfined",
        "--cgroupns=private", "-e", "container=docker", "--tmpfs", "/run", "--tmpfs",
        "/run/lock", "--network", "none", "-v", f"{config_dir}:/etc/evpnd",
        "-v", f"{UNIT}:/etc/systemd/system/evpnd.service:ro",
        "--entrypoint", "/lib/systemd/systemd", image,
    ) as cid:
        box = Systemd(dockerd, cid, config_dir)
        wait_for("systemd up", lambda: box.run("systemctl", "is-system-running",
                                               check=False).strip() in ("running", "degraded"))
        yield box


CAP_NET_ADMIN, CAP_NET_BIND_SERVICE, CAP_CHOWN = 12, 10, 0


def test_the_unit_under_systemd(systemd: Systemd) -> None:
    box = systemd
    # Type=notify: start returns once evpnd said READY=1, and by then the control
    # socket answers and the VNI devices exist.
    assert box.systemctl("start", "evpnd") == 0
    assert box.run("ip", "link", "show", "vxlan100")
    exabgp = box.speaker_pid()
    main = int(box.prop("MainPID"))
    assert (box.prop("ActiveState"), box.prop("SubState")) == ("active", "running")

    # The hardening is in force on the daemon that does the work.
    status = box.run("cat", f"/proc/{main}/status")
    caps = int(re.search(r"^CapBnd:\s*(\w+)$", status, re.M).group(1), 16)  # type: ignore[union-attr]
    assert caps == 1 << CAP_NET_ADMIN | 1 << CAP_NET_BIND_SERVICE | 1 << CAP_CHOWN
    assert re.search(r"^NoNewPrivs:\s*1$", status, re.M)

    # STATUS= follows the daemon (eor_timeout 2 s; the peer never answers).
    wait_for("converged status", lambda: box.prop("StatusText")
             == "converged, 0 of 1 peers up, 1 VNI", WAIT)

    # systemctl reload = `evpnd reload`: applied ...
    box.config.write_text(config(extra=EXTRA_VNI))
    assert box.systemctl("reload", "evpnd") == 0
    assert box.run("ip", "link", "show", "vxlan300")
    wait_for("2 VNIs", lambda: box.prop("StatusText") == "converged, 0 of 1 peers up, 2 VNIs")
    # ... and refused: the reload fails, the daemon runs on with its config.
    box.config.write_text(config(asn=0, extra=EXTRA_VNI))
    assert box.systemctl("reload", "evpnd") != 0
    assert (box.prop("ActiveState"), int(box.prop("MainPID"))) == ("active", main)
    assert "asn" in box.journal("-n", "20")  # what `evpnd reload` printed
    # Log levels reach the journal's priorities: SIGHUP makes the daemon itself read the
    # bad file and log its refusal as an error; its info lines stay out of `-p err`.
    box.run("sh", "-c", f"kill -HUP {main}")
    wait_for("refusal logged", lambda: '"reload refused: invalid config, keeping the running '
             'one"' in box.journal("-p", "err"))
    errors = box.journal("-p", "err")
    assert '"evpnd running"' not in errors and '"config applied"' not in errors
    assert '"evpnd running"' in box.journal("-p", "info")
    wait_for("refusal status", lambda: box.prop("StatusText").startswith("reload refused"))
    box.config.write_text(config(extra=EXTRA_VNI))
    assert box.systemctl("reload", "evpnd") == 0
    wait_for("refusal cleared",
             lambda: box.prop("StatusText") == "converged, 0 of 1 peers up, 2 VNIs")

    # Restart: the new daemon adopts the same ExaBGP (KillMode=process).
    assert box.systemctl("restart", "evpnd") == 0
    assert int(box.prop("MainPID")) != main
    assert box.speaker_pid() == exabgp
    assert '"took over the running exabgp: refreshing routes"' in box.journal("-n", "30")

    # Stop, then start: ExaBGP and state_dir outlived the stop (RuntimeDirectoryPreserve).
    assert box.systemctl("stop", "evpnd") == 0
    assert box.prop("ActiveState") == "inactive"
    assert box.alive(exabgp)
    assert json.loads(box.run("cat", "/run/evpnd/speaker.json"))["pid"] == exabgp
    assert box.systemctl("start", "evpnd") == 0
    assert box.speaker_pid() == exabgp
    assert box.systemctl("stop", "evpnd") == 0
