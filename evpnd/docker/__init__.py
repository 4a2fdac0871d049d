"""Docker network driver (libnetwork remote driver): `docker network create -d evpn`.

Modules, one job each: `protocol` (the JSON calls, pure), `options` (`-o`
options -> an evpnd VNI, pure), `driver` (the state machine and the
daemon-facing `DriverListener`), `kernel` (pyroute2), `state` (persistence),
`server` (aiohttp on the plugin socket), `service` (all of it from a
`DockerConfig`), `settings` (the `docker:` config section).
"""
