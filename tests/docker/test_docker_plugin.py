"""The evpnd network driver against a real dockerd (Debian docker.io 20.10) and a real kernel.

What is checked with iproute2 and sysfs, not with the driver's own view:
devices and veths, their MTU, master and aliases, the container's MAC and
MTU, the gateway answering pings, and that nothing is left afterwards.
"""

from __future__ import annotations

import json
import secrets
import subprocess
from pathlib import Path
from typing import Any

import pytest

from evpnd.docker.driver import gateway_mac, host_if
from tests.docker.conftest import Dockerd, PluginThread, wait_for

pytestmark = pytest.mark.docker

SUBNET = "10.254.60.0/24"
GATEWAY = "10.254.60.1"


def links() -> dict[str, dict[str, Any]]:
    out = subprocess.run(["ip", "-d", "-j", "link", "show"], capture_output=True, text=True,
                         check=True).stdout
    return {link["ifname"]: link for link in json.loads(out)}


def addresses(name: str) -> list[str]:
    out = subprocess.run(["ip", "-j", "addr", "show", "dev", name], capture_output=True,
                         text=True, check=True).stdout
    return [f"{a['local']}/{a['prefixlen']}" for a in json.loads(out)[0]["addr_info"]]


def ours(plugin: PluginThread) -> list[str]:
    """Links carrying this plugin's endpoint alias (veths it made)."""
    mark = f"evpnd:docker={plugin.settings.plugin}:"
    return sorted(n for n, link in links().items() if (link.get("ifalias") or "").startswith(mark))


def rx_packets(name: str) -> int:
    return int(Path(f"/sys/class/net/{name}/statistics/rx_packets").read_text())


def state(plugin: PluginThread) -> dict[str, Any]:
    path = plugin.settings.state_dir / f"docker-{plugin.settings.plugin}.json"
    return json.loads(path.read_text())


def new_vni() -> int:
    return 4_000_000 + secrets.randbelow(1_000_000)


def create_network(dockerd: Dockerd, plugin: PluginThread, name: str, vni: int,
                   *options: str) -> subprocess.CompletedProcess[str]:
    args = ["network", "create", "-d", plugin.settings.plugin, "--subnet", SUBNET,
            "--gateway", GATEWAY, "-o", f"VxlanId={vni}", "-o", "VtepDev=lo"]
    for option in options:
        args += ["-o", option]
    return dockerd.run(*args, name, check=False)


def test_invalid_options_fail_network_create_with_our_message(
    dockerd: Dockerd, plugin: PluginThread
) -> None:
    before = set(links())
    cases = {
        ("VxlanId=abc",): "-o VxlanId=abc: not an integer",
        ("VxlanId=7", "TTL=300"): "-o TTL=300: must be 1..255 or 'inherit'",
        ("VxlanId=7", "vxlanMtu=1400"): "-o vxlanMtu=1400: unknown option (did you mean vxlanMTU?)",
        ("VxlanId=7", "gateway=remote"): "-o gateway=remote: must be 'external' or 'local'",
    }
    for options, message in cases.items():
        args = ["network", "create", "-d", plugin.settings.plugin, "--subnet", SUBNET]
        for option in options:
            args += ["-o", option]
        done = dockerd.run(*args, "evpnd-bad", check=False)
        assert done.returncode != 0, done.stdout
        assert message in done.stderr, done.stderr
    assert "evpnd-bad" not in dockerd.run("network", "ls", "--format", "{{.Name}}").stdout
    assert set(links()) == before  # nothing created, nothing left
    assert state(plugin)["networks"] == []


def test_container_lifecycle_with_restart_of_evpnd(
    dockerd: Dockerd, plugin: PluginThread, image: str
) -> None:
    vni = new_vni()
    bridge, vxlan = f"br{vni}", f"vxlan{vni}"
    net = f"evpnd-{vni}"
    done = create_network(dockerd, plugin, net, vni, "vxlanMTU=1400", "gateway=local")
    assert done.returncode == 0, done.stderr + dockerd.log_tail()

    # The VNI's devices, as the daemon's config would have made them.
    now = links()
    assert now[bridge]["mtu"] == 1400 and now[vxlan]["mtu"] == 1400
    assert now[bridge]["ifalias"] == f"evpnd:vni={vni}"
    assert now[vxlan]["linkinfo"]["info_data"]["id"] == vni
    assert now[vxlan]["master"] == bridge
    # gateway=local: the bridge owns the gateway, with the VNI's fixed MAC.
    assert now[bridge]["address"] == gateway_mac(vni)
    assert f"{GATEWAY}/24" in addresses(bridge)
    [added] = plugin.recorder.of("vni_added")
    assert added.info.vni.vni == vni and added.info.mtu == 1400
    assert added.info.gateway.mac == gateway_mac(vni)

    # A container: it pings the gateway as the very first thing it does.
    script = f"ping -c 3 -W 2 {GATEWAY} > /tmp/ping.txt 2>&1; echo done >> /tmp/ping.txt; " \
             "sleep 600"
    dockerd.run("run", "-d", "--name", f"c{vni}", "--network", net, image, "sh", "-c", script)
    info = dockerd.inspect(f"c{vni}")[0]["NetworkSettings"]["Networks"][net]
    endpoint_id, ip, mac = info["EndpointID"], info["IPAddress"], info["MacAddress"]
    port = host_if(endpoint_id)

    # Reported during Join, before the container's process ran: nothing received yet.
    [joined] = plugin.recorder.of("endpoint_added")
    assert joined.info.vni == vni and joined.info.endpoint_id == endpoint_id
    assert joined.info.mac == mac and [str(a) for a in joined.info.ips] == [ip]
    assert joined.info.port == port
    assert joined.rx_packets == 0, "the container had sent traffic before it was reported"

    # The veth: host end on the bridge with the VNI's MTU; container end eth0 with our MAC.
    now = links()
    assert now[port]["master"] == bridge and now[port]["mtu"] == 1400
    inside = dockerd.run("exec", f"c{vni}", "cat", "/sys/class/net/eth0/address",
                         "/sys/class/net/eth0/mtu").stdout.split()
    assert inside == [mac, "1400"]
    # ... and the container's first traffic reached the gateway on the bridge.
    out = wait_for("the container's pings", lambda: "done" in (r := dockerd.run(
        "exec", f"c{vni}", "cat", "/tmp/ping.txt", check=False).stdout) and r)
    assert "3 packets received" in out, out
    assert rx_packets(port) > 0

    # evpnd restarts between two calls: the container keeps its interface.
    index = now[port]["ifindex"]
    plugin.restart()
    assert plugin.kernel.writes == 0, "recovery changed the kernel"
    assert links()[port]["ifindex"] == index
    assert [e.info.endpoint_id for e in plugin.recorder.of("endpoint_added")] == [endpoint_id]
    assert [e.info.vni.vni for e in plugin.recorder.of("vni_added")] == [vni]
    ping = dockerd.run("exec", f"c{vni}", "ping", "-c", "1", "-W", "2", GATEWAY, check=False)
    assert ping.returncode == 0, ping.stdout + ping.stderr

    # docker restart: Leave + DeleteEndpoint, then a new endpoint (new id, same IP/MAC).
    dockerd.run("restart", "-t", "0", f"c{vni}")
    info = dockerd.inspect(f"c{vni}")[0]["NetworkSettings"]["Networks"][net]
    assert info["EndpointID"] != endpoint_id and info["MacAddress"] == mac
    assert port not in links()
    assert ours(plugin) == [host_if(info["EndpointID"])]
    removed = [e.info.endpoint_id for e in plugin.recorder.of("endpoint_removed")]
    assert removed == [endpoint_id]

    # rm -f: the veth and the endpoint go.
    dockerd.run("rm", "-f", f"c{vni}")
    assert ours(plugin) == []
    assert state(plugin)["endpoints"] == []
    assert len(plugin.recorder.of("endpoint_removed")) == 2

    # network rm: the devices go.
    dockerd.run("network", "rm", net)
    now = links()
    assert bridge not in now and vxlan not in now
    assert [e.info.vni.vni for e in plugin.recorder.of("vni_removed")] == [vni]
    assert state(plugin) == {"version": 1, "networks": [], "endpoints": [], "pools": []}


def test_failed_join_is_cleaned_up_by_delete_endpoint(
    dockerd: Dockerd, plugin: PluginThread, image: str
) -> None:
    """dockerd answers a Join error with DeleteEndpoint and no Leave: nothing may leak."""
    vni = new_vni()
    net = f"evpnd-{vni}"
    assert create_network(dockerd, plugin, net, vni).returncode == 0
    plugin.kernel.fail_veth = "evpnd: injected veth failure"
    done = dockerd.run("run", "-d", "--name", f"f{vni}", "--network", net, image, "sleep", "600",
                       check=False)
    assert done.returncode != 0
    assert "injected veth failure" in done.stderr, done.stderr
    assert ours(plugin) == []
    assert wait_for("DeleteEndpoint", lambda: state(plugin)["endpoints"] == [])
    assert plugin.recorder.of("endpoint_added") == []
    dockerd.run("rm", "-f", f"f{vni}", check=False)
    # The default gateway mode hands out the network's gateway; nobody owns it here.
    dockerd.run("run", "-d", "--name", f"g{vni}", "--network", net, image, "sleep", "600")
    routes = dockerd.run("exec", f"g{vni}", "ip", "route").stdout
    assert f"default via {GATEWAY} dev eth0" in routes, routes
    assert f"{GATEWAY}/24" not in addresses(f"br{vni}")
    dockerd.run("rm", "-f", f"g{vni}")
    dockerd.run("network", "rm", net)
    assert ours(plugin) == [] and f"br{vni}" not in links()


def test_bad_mac_and_the_endpoint_cap_fail_docker_run_with_our_message(
    dockerd: Dockerd, plugin: PluginThread, image: str
) -> None:
    """dockerd takes any MAC it can parse; the driver refuses what is no endpoint's MAC
    before storing anything, and the endpoint past the cap."""
    vni = new_vni()
    net = f"evpnd-{vni}"
    assert create_network(dockerd, plugin, net, vni).returncode == 0
    try:
        done = dockerd.run("run", "-d", "--name", f"m{vni}", "--network", net,
                           "--mac-address", "ff:ff:ff:ff:ff:ff", image, "sleep", "600",
                           check=False)
        assert done.returncode != 0
        assert ("CreateEndpoint: Interface.MacAddress: must be a unicast MAC address, not the "
                "broadcast MAC ff:ff:ff:ff:ff:ff") in done.stderr, done.stderr
        assert state(plugin)["endpoints"] == [] and ours(plugin) == []

        assert plugin.plugin is not None
        driver = plugin.plugin.driver
        driver.max_endpoints_per_network = 1
        dockerd.run("run", "-d", "--name", f"a{vni}", "--network", net, image, "sleep", "600")
        done = dockerd.run("run", "-d", "--name", f"b{vni}", "--network", net, image,
                           "sleep", "600", check=False)
        assert done.returncode != 0
        assert "already has 1 endpoints, the most docker.max_endpoints_per_network" \
            in done.stderr, done.stderr
        assert driver.counters.endpoints_refused_cap == 1
        assert driver.counters.requests_refused_invalid == 1
        assert len(state(plugin)["endpoints"]) == 1 and len(ours(plugin)) == 1
    finally:
        for name in (f"m{vni}", f"a{vni}", f"b{vni}"):
            dockerd.run("rm", "-f", name, check=False)
        dockerd.run("network", "rm", net, check=False)
    assert ours(plugin) == [] and f"br{vni}" not in links()


def test_a_bad_record_from_an_older_evpnd_does_not_stop_recovery(
    dockerd: Dockerd, plugin: PluginThread, image: str
) -> None:
    """Before CreateEndpoint checked addresses, a bad one was stored and then made every
    recovery, Leave, DeleteEndpoint and DeleteNetwork fail: evpnd could not start and the
    network could not be removed. Now the record is skipped and the rest goes on."""
    vni = new_vni()
    net = f"evpnd-{vni}"
    assert create_network(dockerd, plugin, net, vni).returncode == 0
    try:
        dockerd.run("run", "-d", "--name", f"o{vni}", "--network", net, image, "sleep", "600")
        dockerd.run("run", "-d", "--name", f"k{vni}", "--network", net, image, "sleep", "600")
        bad = dockerd.inspect(f"o{vni}")[0]["NetworkSettings"]["Networks"][net]["EndpointID"]
        good = dockerd.inspect(f"k{vni}")[0]["NetworkSettings"]["Networks"][net]["EndpointID"]
        plugin.stop()
        path = plugin.settings.state_dir / f"docker-{plugin.settings.plugin}.json"
        saved = json.loads(path.read_text())
        for record in saved["endpoints"]:
            if record["id"] == bad:
                record["ipv4"] = "10.254.60.300/24"
        path.write_text(json.dumps(saved))

        plugin.start()  # must not raise
        assert plugin.plugin is not None
        assert any(line.startswith(f"skipped endpoint {bad[:12]}")
                   for line in plugin.plugin.recovered), plugin.plugin.recovered
        assert plugin.plugin.driver.counters.records_skipped == 1
        assert [e.info.endpoint_id for e in plugin.recorder.of("endpoint_added")] == [good]
        assert ours(plugin) == [host_if(good)]  # the skipped one's veth removed by its mark
        ping = dockerd.run("exec", f"k{vni}", "ping", "-c", "1", "-W", "2", GATEWAY,
                           check=False)
        assert "1 packets transmitted" in ping.stdout, ping.stdout + ping.stderr
    finally:
        for name in (f"o{vni}", f"k{vni}"):
            dockerd.run("rm", "-f", name, check=False)
        removed = dockerd.run("network", "rm", net, check=False)
    assert removed.returncode == 0, removed.stderr
    assert ours(plugin) == [] and f"br{vni}" not in links()
    assert state(plugin) == {"version": 1, "networks": [], "endpoints": [], "pools": []}
