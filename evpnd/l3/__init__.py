"""Routing between segments: the L3VNI, anycast gateways and Type-5 prefixes.

`settings` holds the config sections (standalone, imported by evpnd/config.py),
`table` the L3 part of the RIB (which remote route each prefix takes, pure).
"""
