"""The `metrics:` section of the config file (off by default).

Standalone on purpose: `evpnd/config.py` imports `MetricsConfig` from here,
so this module must not import `evpnd.config`. Same conventions as there:
unknown keys are errors, the model is frozen, and every error names its field.
"""

from __future__ import annotations

from ipaddress import IPv4Address, IPv6Address

from pydantic import BaseModel, ConfigDict, Field, field_validator

DEFAULT_ADDRESS = IPv4Address("127.0.0.1")
DEFAULT_PORT = 9595
DEFAULT_LAG_INTERVAL = 0.5


class MetricsConfig(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    # Serve /metrics over HTTP. Off unless asked for.
    enabled: bool = False
    # Listen address: loopback by default; 0.0.0.0 or :: for every interface.
    address: IPv4Address | IPv6Address = DEFAULT_ADDRESS
    port: int = DEFAULT_PORT
    # Seconds between two event-loop lag measurements.
    lag_interval: float = Field(default=DEFAULT_LAG_INTERVAL)

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
