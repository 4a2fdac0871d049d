"""Prometheus metrics: built at scrape time from the daemon's own counters.

* `settings.MetricsConfig` - the `metrics:` section of the config file.
* `source.MetricsSource` - exactly what the collector reads from the daemon.
* `collector.EvpndCollector` / `build_registry` - the metric families.
* `looplag.LoopLagMonitor` - event-loop lag, measured by an asyncio task.
* `server.MetricsServer` - the HTTP(S) endpoint (aiohttp, optional TLS and basic
  auth), on the daemon's event loop; it also serves the fabric view (evpnd.web).

This package's `__init__` imports nothing: `evpnd.config` imports
`settings` from here, and must not pull in prometheus_client or the RIB.
"""
