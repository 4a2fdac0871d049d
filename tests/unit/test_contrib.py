"""contrib/: the Prometheus alert rules and the Grafana dashboard.

promtool (Debian package `prometheus`) checks the rules, runs their unit
tests (contrib/prometheus/evpnd-alerts.test.yml) and parses every dashboard
query as PromQL; every metric they name must be one evpnd exposes (here
against the collector over a real RIB; tests/netns/test_fabric_ops.py checks
the same against a lab host's real /metrics).
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterable, Iterator
from pathlib import Path

import pytest
import yaml
from prometheus_client import generate_latest
from prometheus_client.parser import text_string_to_metric_families

from evpnd.metrics.collector import build_registry
from tests.conftest import REPO, require_program
from tests.unit.test_metrics import Source

RULES = REPO / "contrib" / "prometheus" / "evpnd-alerts.yml"
RULE_TESTS = REPO / "contrib" / "prometheus" / "evpnd-alerts.test.yml"
DASHBOARD = REPO / "contrib" / "grafana" / "evpnd-dashboard.json"
# Metric names in PromQL: evpnd's own, prometheus_client's process/python ones.
METRIC = re.compile(r"\b((?:evpnd|process|python)_[a-z0-9_]+)\b")
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$instance": ".*"}


def rule_exprs(path: Path = RULES) -> dict[str, str]:
    """alert name -> expression."""
    doc = yaml.safe_load(path.read_text())
    return {rule["alert"]: rule["expr"] for group in doc["groups"] for rule in group["rules"]}


def _panels(panels: Iterable[dict]) -> Iterator[dict]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", ()))


def dashboard_exprs(path: Path = DASHBOARD) -> dict[str, str]:
    """"panel title/refId" -> expression (template variables' queries included)."""
    doc = json.loads(path.read_text())
    out = {}
    for panel in _panels(doc["panels"]):
        for target in panel.get("targets", ()):
            out[f"{panel['title']}/{target['refId']}"] = target["expr"]
    for variable in doc["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"]
            out[f"${variable['name']}"] = re.sub(r"^label_values\((\w+),.*\)$", r"\1", query)
    return out


def metric_names(expr: str) -> set[str]:
    return set(METRIC.findall(expr))


SUFFIXES = {"counter": ("_total",), "info": ("_info",), "gauge": ("",),
            "histogram": ("_bucket", "_sum", "_count"), "summary": ("", "_sum", "_count")}


def exposed_names(text: str) -> set[str]:
    """Every series name an exposition declares, sampled or not yet (a labelled counter
    such as evpnd_netlink_errors_total has no sample until its first error)."""
    names = set()
    for family in text_string_to_metric_families(text):
        names.update(family.name + suffix for suffix in SUFFIXES.get(family.type, ("",)))
        names.update(s.name for s in family.samples)
    return names


def unknown_metrics(exprs: dict[str, str], exposed: set[str]) -> dict[str, set[str]]:
    missing = {where: metric_names(expr) - exposed for where, expr in exprs.items()}
    return {where: names for where, names in missing.items() if names}


def as_recording_rules(exprs: dict[str, str], path: Path) -> Path:
    """The expressions as recording rules, so that `promtool check rules` parses them."""
    rules = []
    for i, expr in enumerate(exprs.values()):
        for variable, value in GRAFANA_VARIABLES.items():
            expr = expr.replace(variable, value)
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    return path


@pytest.fixture(scope="module")
def exposed() -> set[str]:
    source = Source()
    source.feed("state_up", "type2_mac_only", "type3_imet_pmsi")
    return exposed_names(generate_latest(build_registry(source)).decode())


def promtool(*args: str) -> subprocess.CompletedProcess[str]:
    tool = require_program("promtool", "prometheus")
    return subprocess.run([tool, *args], capture_output=True, text=True, timeout=60)


def test_promtool_checks_the_rules() -> None:
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(rule_exprs())} rules found" in result.stdout


def test_alerts_fire_when_they_should_and_only_then() -> None:
    result = promtool("test", "rules", str(RULE_TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_rule_has_a_severity_and_a_summary() -> None:
    doc = yaml.safe_load(RULES.read_text())
    for rule in (r for group in doc["groups"] for r in group["rules"]):
        assert rule["labels"]["severity"] in ("critical", "warning", "info"), rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


def test_rules_name_only_metrics_evpnd_exposes(exposed: set[str]) -> None:
    assert unknown_metrics(rule_exprs(), exposed) == {}


def test_dashboard_parses_and_its_queries_are_promql_on_real_metrics(
    exposed: set[str], tmp_path: Path
) -> None:
    doc = json.loads(DASHBOARD.read_text())
    assert doc["uid"] and doc["title"] == "evpnd"
    panels = list(_panels(doc["panels"]))
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    for panel in panels:
        assert set(panel["gridPos"]) == {"h", "w", "x", "y"}, panel["title"]
        assert panel["gridPos"]["x"] + panel["gridPos"]["w"] <= 24, panel["title"]
    exprs = dashboard_exprs()
    assert len(exprs) > 20
    assert unknown_metrics(exprs, exposed) == {}
    result = promtool("check", "rules", str(as_recording_rules(exprs, tmp_path / "q.yml")))
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_checks_can_fail(exposed: set[str], tmp_path: Path) -> None:
    """A misspelt metric and a broken query are caught."""
    assert unknown_metrics({"x": "rate(evpnd_fdb_entries[5m])"}, exposed) == {
        "x": {"evpnd_fdb_entries"}}  # fmt: skip
    broken = as_recording_rules({"x": "sum by (vni (evpnd_fdb_entries_desired)"},
                                tmp_path / "bad.yml")  # fmt: skip
    assert promtool("check", "rules", str(broken)).returncode != 0
