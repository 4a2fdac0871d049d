"""evpnd: a BGP EVPN control-plane daemon for Linux VXLAN hosts."""

__version__ = "0.1.0"
