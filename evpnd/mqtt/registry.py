"""The endpoints registered over MQTT, mirrored from the broker (pure).

The broker's retained messages on `P/endpoints/<vni>/<mac>` are the source of
truth. A registration cleared while evpnd was disconnected produces no
message at all, so every (re)connect is a resync: `begin_sync()` when the
subscription is made, `apply()` for each message, `end_sync()` once the
broker has delivered every retained message (the service knows by a marker
message it publishes to itself after subscribing); what was registered but
not seen in that window is gone and comes back as `EndpointUnregistered`.

`apply()` also removes repeats: the retained messages re-delivered at each
reconnect change nothing and are not passed on.

At most `max_endpoints` endpoints are held (mqtt.max_endpoints): `admits()`
says no to a new one past it, and the service refuses it (counted, logged,
an error event); a refused registration counts only once it is published
again after another one went, or at the next reconnect.
"""

from __future__ import annotations

from evpnd.mqtt.codec import EndpointRegistered, EndpointUnregistered, Registration


class EndpointRegistry:
    def __init__(self, max_endpoints: int | None = None) -> None:
        self.max_endpoints = max_endpoints  # None: no bound
        self._endpoints: dict[tuple[int, str], EndpointRegistered] = {}
        self._seen: set[tuple[int, str]] | None = None

    def __len__(self) -> int:
        return len(self._endpoints)

    @property
    def syncing(self) -> bool:
        return self._seen is not None

    def endpoints(self) -> dict[tuple[int, str], EndpointRegistered]:
        return dict(self._endpoints)

    def admits(self, change: Registration) -> bool:
        """False for a new endpoint past max_endpoints (changes to held ones always fit)."""
        return (
            self.max_endpoints is None
            or not isinstance(change, EndpointRegistered)
            or change.key in self._endpoints
            or len(self._endpoints) < self.max_endpoints
        )

    def begin_sync(self) -> None:
        self._seen = set()

    def abort_sync(self) -> None:
        """The connection was lost before the sync finished: keep everything."""
        self._seen = None

    def apply(self, change: Registration) -> Registration | None:
        """The change to pass on, or None when it changes nothing."""
        if self._seen is not None:
            self._seen.add(change.key)
        if isinstance(change, EndpointRegistered):
            if self._endpoints.get(change.key) == change:
                return None
            self._endpoints[change.key] = change
            return change
        if self._endpoints.pop(change.key, None) is None:
            return None
        return change

    def end_sync(self) -> list[EndpointUnregistered]:
        """Unregister what the broker no longer holds; no-op when not syncing."""
        seen, self._seen = self._seen, None
        if seen is None:
            return []
        gone = [key for key in self._endpoints if key not in seen]
        for key in gone:
            del self._endpoints[key]
        return [EndpointUnregistered(vni, mac) for vni, mac in gone]
