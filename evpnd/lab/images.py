"""The explicit map from container images to what the namespace lab runs instead.

No image is ever pulled or unpacked. Each image a topology may name is listed
here with the host program that stands in for it; anything else is refused,
because silently running e.g. host FRR 8.4.4 for an `frr:9.1` image would
make a lab test something other than what its file says.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum


class Role(StrEnum):
    FRR = "frr"  # host FRR daemons, one pathspace per node (see frr.py)
    EVPND = "evpnd"  # this checkout's evpnd (see program.py)
    GOBGP = "gobgp"  # the host's gobgpd (see gobgp.py)
    MOSQUITTO = "mosquitto"  # the host's mosquitto (see mosquitto.py)
    NAMESPACE = "namespace"  # nothing runs; exec lines use the host's tools


@dataclass(frozen=True)
class ImageSpec:
    role: Role
    substitute: str  # shown in the `lab up` report


_FRR = ImageSpec(Role.FRR, "host FRR 8.4.4: the /usr/lib/frr daemons the bound daemons file names")
_EVPND = ImageSpec(Role.EVPND, "this checkout: <venv python> -m evpnd run -c <bound evpnd.yaml>")
_GOBGP = ImageSpec(
    Role.GOBGP,
    "host gobgpd 3.10.0: gobgpd -f <bound gobgpd.conf> --api-hosts 127.0.0.1:50051 (in the node)",
)
_MOSQUITTO = ImageSpec(
    Role.MOSQUITTO,
    "host mosquitto 2.0.11: /usr/sbin/mosquitto -c <bound mosquitto.conf> (in the node)",
)
_SHELL = ImageSpec(Role.NAMESPACE, "nothing started: the namespace alone; exec uses host tools")

# Keys are normalized references (see `normalize`): no docker.io/ or library/
# prefix, always a tag.
IMAGE_MAP: dict[str, ImageSpec] = {
    # FRR: only the release installed on the host, in its two official spellings.
    "quay.io/frrouting/frr:8.4.4": _FRR,
    "frrouting/frr:v8.4.4": _FRR,
    # evpnd, built from containerlab/Dockerfile (context: the repository root).
    "evpnd:latest": _EVPND,
    # GoBGP: only the release installed on the host (Debian gobgpd 3.10.0).
    # osrg/gobgp is left out on purpose: its tags do not pin a gobgpd version.
    "jauderho/gobgp:v3.10.0": _GOBGP,
    # MQTT broker: only the release installed on the host (Debian mosquitto 2.0.11).
    "eclipse-mosquitto:2.0.11": _MOSQUITTO,
    # Endpoints: images only used for a shell, `ip` and `ping`.
    "alpine:3": _SHELL,
    "alpine:latest": _SHELL,
    "busybox:latest": _SHELL,
    "busybox:1": _SHELL,
}


# Where each image reads its configuration; a node binds its files to these paths.
FRR_CONFIG = "/etc/frr/frr.conf"
FRR_DAEMONS = "/etc/frr/daemons"
EVPND_CONFIG = "/etc/evpnd/evpnd.yaml"
# gobgpd's config: TOML in gobgpd.conf / gobgpd.toml, or gobgpd.yaml / .yml / .json;
# gobgpd's -t follows the bound file's extension (see gobgp.py).
# The Eclipse Mosquitto image's config file.
MOSQUITTO_CONFIG = "/mosquitto/config/mosquitto.conf"
GOBGP_CONFIGS = tuple(f"/etc/gobgp/gobgpd.{ext}" for ext in ("conf", "toml", "yaml", "yml", "json"))


class UnknownImage(LookupError):
    pass


def normalize(reference: str) -> str:
    """Docker's equivalent spellings to one: drop docker.io/ and library/, default :latest."""
    ref = reference.strip()
    ref = ref.removeprefix("docker.io/").removeprefix("index.docker.io/")
    ref = ref.removeprefix("library/")
    last = ref.rsplit("/", 1)[-1]
    # A ':' before the last '/' is a registry port, not a tag.
    if ":" not in last and "@" not in last:
        ref += ":latest"
    return ref


def lookup(reference: str) -> ImageSpec:
    spec = IMAGE_MAP.get(normalize(reference))
    if spec is None:
        known = ", ".join(sorted(IMAGE_MAP))
        raise UnknownImage(
            f"image {reference!r} has no host substitute in the namespace lab "
            f"(known images: {known}; see evpnd/lab/images.py)"
        )
    return spec
