"""evpnd's one netlink stack (NETLINK_ROUTE, plain `struct`, no pyroute2 on the hot paths).

- `wire`: constants, framing (`iter_messages`), attributes (`iter_attrs`), the
  neighbour and link decoders (`NeighMsg`, `LinkMsg`) and the byte-level
  pre-checks that skip the echo of evpnd's own writes before decoding. Pure.
- `linkindex`: `LinkIndex`, the ifindex <-> name cache every user keeps. Pure.
- `bpf`: socket filters that drop that echo in the kernel.
- `routesocket`: `RouteSocket` (opened inside a namespace): batched requests
  with per-message errors, the dump loop, event datagrams; `dump_links`.

Users: the writer and the reconciler (`dataplane/writer.py`, `dump.py`,
`reconciler.py`) and local learning (`localtable.py`, `learner.py`).
"""
