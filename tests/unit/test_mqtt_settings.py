"""The `mqtt:` config section: defaults, and every rule with a clear message."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from evpnd.mqtt import settings
from evpnd.mqtt.settings import MqttConfig, MqttTls


def errors(**values: Any) -> list[tuple[str, str]]:
    with pytest.raises(ValidationError) as info:
        MqttConfig(**values)
    return [(".".join(map(str, e["loc"])), e["msg"]) for e in info.value.errors()]


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(settings.socket, "gethostname", lambda: "h1")
    cfg = MqttConfig(host="broker.example")
    assert (cfg.port, cfg.tls, cfg.username, cfg.password) == (1883, None, None, None)
    assert cfg.client_id == "evpnd-h1"
    assert cfg.topic_prefix == "evpnd/h1"
    assert (cfg.qos, cfg.keepalive, cfg.reconnect_min, cfg.reconnect_max) == (1, 60, 1.0, 60.0)
    assert cfg.queue_size == 1000
    assert cfg.broker == "mqtt://broker.example:1883"


def test_tls_changes_the_default_port_only() -> None:
    assert MqttConfig(host="b", tls={}).port == 8883
    assert MqttConfig(host="b", tls={}, port=1884).port == 1884
    assert MqttConfig(host="b", tls=None).port == 1883
    assert MqttConfig(host="b", port=None).port == 1883
    assert MqttConfig(host="2001:db8::1", tls={}).broker == "mqtts://[2001:db8::1]:8883"


def test_full_tls_and_auth() -> None:
    cfg = MqttConfig(host="b", tls={"ca": "/etc/ssl/ca.pem", "cert": "/c.pem", "key": "/k.pem",
                                    "insecure": True},
                     username="evpnd", password="pw")
    assert cfg.tls == MqttTls(ca=Path("/etc/ssl/ca.pem"), cert=Path("/c.pem"),
                              key=Path("/k.pem"), insecure=True)
    assert "pw" not in repr(cfg)


@pytest.mark.parametrize(
    ("values", "where", "fragment"),
    [
        ({}, "host", "Field required"),
        ({"host": ""}, "host", "at least 1"),
        ({"host": "a b"}, "host", "host name or address"),
        ({"host": "b", "port": 0}, "port", "greater than or equal to 1"),
        ({"host": "b", "port": 65536}, "port", "less than or equal to 65535"),
        ({"host": "b", "qos": 3}, "qos", "less than or equal to 2"),
        ({"host": "b", "qos": -1}, "qos", "greater than or equal to 0"),
        ({"host": "b", "keepalive": 1}, "keepalive", "greater than or equal to 5"),
        ({"host": "b", "tls": {"cert": "/c.pem"}}, "tls", "'cert' needs 'key'"),
        ({"host": "b", "tls": {"key": "/k.pem"}}, "tls", "'key' needs 'cert'"),
        ({"host": "b", "tls": {"cafile": "/ca"}}, "tls.cafile", "Extra inputs"),
        ({"host": "b", "password": "pw"}, "", "'password' needs 'username'"),
        ({"host": "b", "reconnect_min": 10, "reconnect_max": 5}, "", "larger than"),
        ({"host": "b", "reconnect_min": 0}, "reconnect_min", "greater than 0"),
        ({"host": "b", "queue_size": 0}, "queue_size", "greater than or equal to 1"),
        ({"host": "b", "client_id": ""}, "client_id", "at least 1"),
        ({"host": "b", "topic_prefix": ""}, "topic_prefix", "must not be empty"),
        ({"host": "b", "topic_prefix": "evpnd/+"}, "topic_prefix", "wildcards"),
        ({"host": "b", "topic_prefix": "evpnd/#"}, "topic_prefix", "wildcards"),
        ({"host": "b", "topic_prefix": "/evpnd"}, "topic_prefix", "empty levels"),
        ({"host": "b", "topic_prefix": "evpnd/"}, "topic_prefix", "empty levels"),
        ({"host": "b", "topic_prefix": "a//b"}, "topic_prefix", "empty levels"),
        ({"host": "b", "topic_prefix": "$SYS/x"}, "topic_prefix", "'$'"),
        ({"host": "b", "topic_prefix": "a\0b"}, "topic_prefix", "NUL"),
        ({"host": "b", "topic_prefix": "x" * 1025}, "topic_prefix", "at most 1024"),
        ({"host": "b", "colour": "blue"}, "colour", "Extra inputs"),
    ],
)
def test_invalid(values: dict[str, Any], where: str, fragment: str) -> None:
    found = errors(**values)
    assert any(loc == where and fragment in msg for loc, msg in found), found


def test_errors_name_line_field_and_value_through_the_config_loader() -> None:
    """The main config's error report works for this section once it is wired in."""
    from evpnd import config

    class WithMqtt(config.Config):
        mqtt: MqttConfig | None = None

    text = ("router_id: 192.0.2.1\nasn: 65000\nvtep: {address: 192.0.2.1, device: eth0}\n"
            "mqtt:\n  host: broker\n  qos: 5\n  tls:\n    cert: /c.pem\n")
    data = config.yaml.safe_load(text)
    with pytest.raises(config.ValidationError) as info:
        WithMqtt.model_validate(data)
    issues = config._issues(info.value, data, config._line_map(text))
    by_path = {i.path: i for i in issues}
    assert by_path["mqtt.qos"].value == 5 and by_path["mqtt.qos"].line == 6
    assert "'cert' needs 'key'" in by_path["mqtt.tls"].message
    assert by_path["mqtt.tls"].line == 7
