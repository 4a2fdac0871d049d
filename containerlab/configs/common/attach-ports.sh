#!/bin/sh
# attach-ports.sh BRIDGE PORT...
#
# Wait for BRIDGE, then make each PORT a port of it and bring it up.
# evpnd creates its bridges (br100, br200) from its config once it runs, and
# a node's exec lines start right after the node's program (containerlab runs
# `exec` once the container's entrypoint is started, `evpnd lab up` does the
# same), so the bridge may not exist yet when this runs. Bounded: 30 s.
set -eu
bridge=$1
shift
tries=0
until ip link show dev "$bridge" >/dev/null 2>&1; do
    tries=$((tries + 1))
    if [ "$tries" -gt 300 ]; then
        echo "attach-ports: bridge $bridge did not appear within 30 s (is evpnd running?)" >&2
        exit 1
    fi
    sleep 0.1
done
for port in "$@"; do
    ip link set dev "$port" master "$bridge"
    ip link set dev "$port" up
done
