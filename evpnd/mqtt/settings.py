"""The optional `mqtt:` section of the config file.

Documented field by field in `config/evpnd.example.yaml`. Same conventions as
`evpnd.config`: unknown keys are errors, every problem names its field.
This module must not import `evpnd.config` (that module imports this one).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

PORT = 1883
TLS_PORT = 8883
# Topic names are UTF-8 strings of at most 65535 bytes; the prefix leaves room
# for `/endpoints/<vni>/<mac>`.
PREFIX_MAX = 1024


def hostname() -> str:
    return socket.gethostname() or "localhost"


def check_topic_prefix(value: str) -> str:
    """A topic prefix: levels separated by '/', no wildcards, no empty levels."""
    if not value:
        raise ValueError("must not be empty")
    if len(value.encode()) > PREFIX_MAX:
        raise ValueError(f"must be at most {PREFIX_MAX} bytes")
    if "+" in value or "#" in value:
        raise ValueError("must not contain the MQTT wildcards '+' or '#'")
    if "\0" in value:
        raise ValueError("must not contain a NUL character")
    if value.startswith("$"):
        raise ValueError("must not start with '$' (reserved for broker topics)")
    if value.startswith("/") or value.endswith("/") or "//" in value:
        raise ValueError("must not start or end with '/' or contain empty levels ('//')")
    return value


class _Strict(BaseModel):
    # The same policy as evpnd.config.Strict (not imported: import cycle).
    model_config = ConfigDict(extra="forbid", frozen=True)


class MqttTls(_Strict):
    # CA certificate(s) (PEM) that signed the broker's certificate;
    # None = the system's trust store.
    ca: Path | None = None
    # Client certificate and its private key (PEM) for brokers that require
    # client authentication; both or neither.
    cert: Path | None = None
    key: Path | None = None
    # True = do not check that the broker's certificate names `host` (the
    # certificate chain is still verified), like mosquitto_pub --insecure.
    insecure: bool = False

    @model_validator(mode="after")
    def _pair(self) -> MqttTls:
        if self.cert is not None and self.key is None:
            raise ValueError("'cert' needs 'key' (the client certificate's private key)")
        if self.key is not None and self.cert is None:
            raise ValueError("'key' needs 'cert' (the client certificate)")
        return self


class MqttConfig(_Strict):
    # Broker host name or address.
    host: str = Field(min_length=1, max_length=253)
    # Default 1883, or 8883 when `tls` is set.
    port: int = Field(default=PORT, ge=1, le=65535)
    tls: MqttTls | None = None
    username: str | None = Field(default=None, min_length=1, max_length=65535)
    password: str | None = Field(default=None, max_length=65535, repr=False)
    client_id: str = Field(default_factory=lambda: f"evpnd-{hostname()}", min_length=1,
                           max_length=65535)
    topic_prefix: str = Field(default_factory=lambda: f"evpnd/{hostname()}")
    # QoS of everything evpnd publishes and of its subscription.
    qos: int = Field(default=1, ge=0, le=2)
    # Seconds between MQTT keepalive pings.
    keepalive: int = Field(default=60, ge=5, le=65535)
    # Seconds to wait before reconnecting: doubles after each failure, from
    # reconnect_min up to reconnect_max; back to reconnect_min once connected.
    reconnect_min: float = Field(default=1.0, gt=0, le=3600)
    reconnect_max: float = Field(default=60.0, gt=0, le=3600)
    # Events waiting to be sent while connected; past it the oldest are dropped
    # (counted) to make room for the newest. Summaries are never dropped.
    queue_size: int = Field(default=1000, ge=1, le=1_000_000)
    # Endpoints registered over MQTT at most; a new one past it is refused
    # (counted, logged, an error event).
    max_endpoints: int = Field(default=16384, ge=1, le=1_000_000)

    @model_validator(mode="before")
    @classmethod
    def _default_port(cls, data: Any) -> Any:
        if isinstance(data, dict) and data.get("port") is None:
            data = dict(data)
            data["port"] = TLS_PORT if data.get("tls") is not None else PORT
        return data

    @field_validator("topic_prefix")
    @classmethod
    def _prefix(cls, value: str) -> str:
        return check_topic_prefix(value)

    @field_validator("host")
    @classmethod
    def _host(cls, value: str) -> str:
        if any(c.isspace() for c in value) or "/" in value:
            raise ValueError("must be a host name or address (no spaces or '/')")
        return value

    @model_validator(mode="after")
    def _cross(self) -> MqttConfig:
        if self.password is not None and self.username is None:
            raise ValueError("'password' needs 'username'")
        if self.reconnect_min > self.reconnect_max:
            raise ValueError(
                f"reconnect_min ({self.reconnect_min}) is larger than reconnect_max "
                f"({self.reconnect_max})"
            )
        return self

    @property
    def broker(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"{'mqtts' if self.tls else 'mqtt'}://{host}:{self.port}"
