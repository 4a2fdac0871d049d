"""The `metrics:` section of the config file (off by default).

Standalone on purpose: `evpnd/config.py` imports `MetricsConfig` from here,
so this module must not import `evpnd.config`. Same conventions as there:
unknown keys are errors, the model is frozen, and every error names its field.

The basic-auth password is a `SecretStr`: it prints as `**********` in a
repr, a log line or a config dump, and a password of the wrong type is
refused without echoing it (the config error report shows the input of a
field error).
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

DEFAULT_ADDRESS = IPv4Address("127.0.0.1")
DEFAULT_PORT = 9595
DEFAULT_LAG_INTERVAL = 0.5
SECRET_MAX = 1024


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class MetricsTls(_Strict):
    """HTTPS instead of HTTP: the server's certificate (chain) and its private key, PEM."""

    cert: Path
    key: Path


class MetricsBasicAuth(_Strict):
    """HTTP basic authentication for every page of the endpoint (RFC 7617)."""

    user: str = Field(min_length=1, max_length=256)
    password: SecretStr

    @model_validator(mode="before")
    @classmethod
    def _password(cls, data: Any) -> Any:
        # Checked here, on the whole mapping, so that no error carries a copy
        # of the value (a field error would: its `input` is the password).
        if not isinstance(data, dict) or "password" not in data:
            return data
        password = data["password"]
        if isinstance(password, SecretStr):
            password = password.get_secret_value()
        if not isinstance(password, str):
            raise ValueError("password must be a string (quote it in YAML)")
        if not 1 <= len(password) <= SECRET_MAX:
            raise ValueError(f"password must be 1..{SECRET_MAX} characters long")
        return data

    @field_validator("user")
    @classmethod
    def _user(cls, value: str) -> str:
        if ":" in value:
            raise ValueError("user must not contain ':' (basic auth splits at the first one)")
        if any(ord(c) < 32 or ord(c) == 127 for c in value):
            raise ValueError("user must not contain control characters")
        return value


class MetricsConfig(_Strict):
    # Serve /metrics over HTTP. Off unless asked for.
    enabled: bool = False
    # Listen address: loopback by default; 0.0.0.0 or :: for every interface.
    address: IPv4Address | IPv6Address = DEFAULT_ADDRESS
    port: int = DEFAULT_PORT
    # Seconds between two event-loop lag measurements.
    lag_interval: float = Field(default=DEFAULT_LAG_INTERVAL)
    # HTTPS with this certificate and key; None = plain HTTP.
    tls: MetricsTls | None = None
    # Basic authentication on every page; None = open to whoever reaches the port.
    basic_auth: MetricsBasicAuth | None = None
    # The live fabric view (/fabric) on the same server, behind the same TLS and auth.
    fabric_view: bool = False

    @field_validator("port")
    @classmethod
    def _port(cls, value: int) -> int:
        if not 1 <= value <= 65535:
            raise ValueError("port must be a TCP port number, 1..65535")
        return value

    @field_validator("lag_interval")
    @classmethod
    def _lag_interval(cls, value: float) -> float:
        if not 0.01 <= value <= 60:
            raise ValueError("lag_interval must be between 0.01 and 60 seconds")
        return value
