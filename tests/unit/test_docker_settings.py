"""The `docker:` config section and its documentation in the example file."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml
from pydantic import ValidationError

from evpnd.docker.settings import DockerConfig

EXAMPLE = Path(__file__).resolve().parent.parent.parent / "config" / "evpnd.example.yaml"


def test_defaults() -> None:
    cfg = DockerConfig()
    assert not cfg.enabled and cfg.plugin == "evpn"
    assert cfg.socket_path == Path("/run/docker/plugins/evpn.sock")
    assert (cfg.max_endpoints_per_network, cfg.max_endpoints) == (4096, 16384)
    assert cfg.dockerd_socket == Path("/run/docker.sock")


@pytest.mark.parametrize(
    ("values", "fragment"),
    [
        ({"plugin": "Evpn"}, "lower-case"),
        ({"plugin": ""}, "lower-case"),
        ({"socket_dir": "run/docker"}, "absolute"),
        ({"state_dir": "x"}, "absolute"),
        ({"dockerd_socket": "docker.sock"}, "absolute"),
        ({"socket_dir": "/" + "d" * 120}, "longer than 107 bytes"),
        ({"port": 1}, "Extra inputs"),
        ({"plugin": "evpn\n"}, "lower-case"),  # `$` would have matched before the newline
        ({"max_endpoints": 0}, "greater than or equal to 1"),
        ({"max_endpoints_per_network": 0}, "greater than or equal to 1"),
    ],
)
def test_invalid(values: dict[str, object], fragment: str) -> None:
    with pytest.raises(ValidationError, match=fragment):
        DockerConfig.model_validate(values)


def test_example_documents_the_docker_block() -> None:
    """Every field is in the example, commented out (off by default) or live."""
    lines = EXAMPLE.read_text().splitlines()
    marker = next(i for i, line in enumerate(lines) if line in ("docker:", "# docker:"))
    commented = lines[marker].startswith("#")
    block = []
    for line in lines[marker:]:
        if commented and not line.startswith("#"):
            break
        if not commented and block and line and not line.startswith(" "):
            break
        block.append(line[2:] if commented else line)
    parsed = yaml.safe_load("\n".join(block))
    assert DockerConfig.model_validate(parsed["docker"]) == DockerConfig()
    for name in DockerConfig.model_fields:
        assert name in parsed["docker"], f"DockerConfig.{name} undocumented"
