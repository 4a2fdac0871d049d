# Everything a fresh Debian 12 machine needs, as root: `make demo` or `make test`.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
# Debian packages the daemon, the demo and the tests use:
#   iproute2/iputils-ping: lab plumbing and pings; frr: route reflector and FRR VTEPs;
#   gobgpd: the alternative route reflector; python3-venv: the virtualenv;
#   mosquitto (+ mosquitto_passwd) and openssl: the MQTT tests start a real broker
#   on a loopback port, with TLS certificates and a password file made by the test.
#   docker.io and busybox-static: tests/docker starts a private dockerd (its own data-root,
#   exec-root and socket; never the system one) and imports an offline image made from
#   busybox-static, to test the network driver (evpnd/docker) for real.
#   prometheus: promtool checks contrib/prometheus/ rules and a lab host's real /metrics;
#   chromium: the fabric view is loaded in a real headless browser (DevTools protocol).
#   systemd: systemd-analyze verifies contrib/systemd/evpnd.service. debootstrap: a Debian 12
#   root file system (cached in .cache/) is the base the tests build the evpnd image on.
#   zsh: the generated zsh completion (`evpnd completion zsh`) is run by a unit test.
#   dnsmasq-base and nftables: the evpn-dhcp lab's gateway host serves DHCP and masquerades
#   the overlay (docs/dhcp-nat.md); busybox-static's udhcpc is its client.
APT_PACKAGES := iproute2 iputils-ping frr gobgpd python3-venv python3-pip mosquitto openssl \
	docker.io busybox-static prometheus chromium systemd debootstrap zsh dnsmasq-base nftables
PYTEST_ARGS ?=
# `make bench BENCH_ARGS=--smoke` runs the suite at tiny sizes (what CI's smoke test does).
BENCH_ARGS ?=

.PHONY: demo demo-irb test bench chaos lint deps venv clean

deps:
	@missing=""; for p in $(APT_PACKAGES); do \
	  dpkg -s $$p >/dev/null 2>&1 || missing="$$missing $$p"; done; \
	if [ -n "$$missing" ]; then \
	  echo "installing Debian packages:$$missing"; \
	  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $$missing; \
	fi

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[test]'
	touch $@

venv: deps $(VENV)/.installed

demo: venv
	$(PY) -m evpnd.demo

# Routing between segments on the evpn-irb lab (README "Routing between segments").
demo-irb: venv
	$(PY) -m evpnd.demo_irb

test: venv
	$(PY) -m pytest $(PYTEST_ARGS)

bench: venv
	$(PY) -m bench.run $(BENCH_ARGS)

# The chaos and fuzz suite (tests/chaos) at full counts: an hour or more. `make test` (and
# CI) runs the same scenarios with a few rounds each. The last line it prints:
#   chaos_rounds=N faults=F stale=S missing=M pings_lost=P crashes=C
chaos: venv
	rm -f .cache/chaos/report.json
	EVPND_CHAOS=full $(PY) -m pytest -ra tests/chaos $(PYTEST_ARGS); rc=$$?; \
	$(PY) -m tests.chaos.summary; exit $$rc

lint: venv
	$(VENV)/bin/ruff check evpnd tests bench

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
