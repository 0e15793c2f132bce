"""Dashboards and alert rules are generated from the metric names: the committed files are exactly what
``python -m grafana.dashboards`` writes, and every series they read is one the code defines."""

from __future__ import annotations

import json
import re

import pytest
from prometheus_client import CollectorRegistry

from gateway import metrics as gateway_metrics
from grafana import dashboards as gd
from notification_service import metrics as notify_metrics

KNOWN = set(gateway_metrics.NAMES.values()) | set(notify_metrics.NAMES.values())
HISTOGRAMS = {gateway_metrics.NAMES["delivery_latency"], gateway_metrics.NAMES["presence_op_latency"]}
HISTOGRAMS.add(notify_metrics.NAMES["processing"])


def series_in(expr: str) -> set[str]:
    return set(re.findall(r"\bprism_[a-z_]+", expr))


def test_committed_files_are_what_the_generator_writes() -> None:
    for path, text in gd.rendered().items():
        assert path.read_text() == text, f"{path} is stale: run python -m grafana.dashboards"
    assert gd.main(["--check"]) == 0


@pytest.mark.parametrize(
    ("name", "uid"), [("prism-gateway.json", "prism-gateway"), ("prism-notify.json", "prism-notify")]
)
def test_dashboards_have_stable_uids_and_a_prometheus_datasource_variable(name: str, uid: str) -> None:
    board = json.loads((gd.DASHBOARDS_DIR / name).read_text())
    assert board["uid"] == uid
    variable = board["templating"]["list"][0]
    assert (variable["name"], variable["type"], variable["query"]) == (
        "datasource",
        "datasource",
        "prometheus",
    )
    ids = [p["id"] for p in board["panels"]]
    assert len(ids) == len(set(ids))
    for panel in board["panels"]:
        if panel["type"] == "row":
            continue
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}
        assert panel["targets"], panel["title"]
        assert all(t["datasource"]["uid"] == "${datasource}" for t in panel["targets"])


def test_every_series_a_dashboard_or_alert_reads_is_defined_once_in_names() -> None:
    exprs = [expr for board in gd.dashboards().values() for _, expr in gd.panel_queries(board)]
    exprs += [a.expr for group in gd.alerts().values() for a in group]
    used = set().union(*map(series_in, exprs))
    for name in used:
        base = name
        for suffix in ("_bucket", "_sum", "_count"):
            if name.endswith(suffix) and name.removesuffix(suffix) in HISTOGRAMS:
                base = name.removesuffix(suffix)
        assert base in KNOWN, f"{name} is not in any NAMES"
    for names in (gateway_metrics.NAMES, notify_metrics.NAMES):
        assert len(set(names.values())) == len(names), "a metric name is defined twice"


def test_every_name_is_exported_by_the_registries() -> None:
    gateway = CollectorRegistry()
    gateway_metrics.GatewayMetrics(gateway, "n1")
    notify = CollectorRegistry()
    notify_metrics.NotifyMetrics(notify)
    exported = {
        sample.name
        for registry in (gateway, notify)
        for family in registry.collect()
        for sample in family.samples
    }
    exported |= {family.name for registry in (gateway, notify) for family in registry.collect()}
    exported |= {name + "_total" for name in exported}
    missing = [name for name in KNOWN if name not in exported]
    assert not missing
