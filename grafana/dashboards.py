"""Grafana dashboards and Prometheus alert rules as code, built from the metric names in
:data:`gateway.metrics.NAMES` and :data:`notification_service.metrics.NAMES` (never spelled again here).

    python -m grafana.dashboards          # rewrite grafana/dashboards/*.json, grafana/alerts/*.rules.yml
    python -m grafana.dashboards --check  # exit 1 if the committed files differ from what this builds

Every dashboard has a stable uid and a ``datasource`` variable (any Prometheus data source), so it can be
provisioned (``grafana/provisioning/``) or imported by hand.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gateway.metrics import NAMES as G
from notification_service.metrics import NAMES as N
from shared.close_codes import CloseCode

HERE = Path(__file__).resolve().parent
CHART_FILES_DIR = HERE.parent / "helm" / "prism" / "files"
DASHBOARDS_DIR = HERE / "dashboards"
ALERTS_FILE = HERE / "alerts" / "prism.rules.yml"

DATASOURCE = {"type": "prometheus", "uid": "${datasource}"}
RATE = "$__rate_interval"
NODE = 'node=~"$node"'
WIDTH = 24
SLOW = int(CloseCode.SLOW_CONSUMER)


def _sel(selector: str) -> str:
    return f"{{{selector}}}" if selector else ""


def rate(name: str, by: str, selector: str = NODE) -> str:
    return f"sum by ({by}) (rate({name}{_sel(selector)}[{RATE}]))"


def quantile(q: float, name: str, by: str, selector: str = NODE) -> str:
    inner = f"sum by (le, {by}) (rate({name}_bucket{_sel(selector)}[{RATE}]))"
    return f"histogram_quantile({q}, {inner})"


@dataclass(frozen=True)
class Target:
    expr: str
    legend: str = ""
    instant: bool = False
    heatmap: bool = False


@dataclass(frozen=True)
class Panel:
    title: str
    targets: tuple[Target, ...]
    description: str = ""
    kind: str = "timeseries"  # timeseries, stat, heatmap, table
    unit: str = "short"
    width: int = 8
    height: int = 8
    stack: bool = False


@dataclass
class Row:
    title: str
    panels: list[Panel] = field(default_factory=list)


def t(expr: str, legend: str = "") -> Target:
    return Target(expr, legend)


# -- the gateway cluster ----------------------------------------------------------------------------------
def gateway_rows() -> list[Row]:
    lat, pres = G["delivery_latency"], G["presence_op_latency"]
    return [
        Row(
            "Cluster",
            [
                Panel("Connections", (t(f"sum({G['connections']}{{{NODE}}})"),), kind="stat", width=4),
                Panel("Nodes ready", (t(f"sum({G['ready']}{{{NODE}}})"),), kind="stat", width=4),
                Panel(
                    "Nodes connected to NATS",
                    (t(f"sum({G['nats_connected']}{{{NODE}}})"),),
                    kind="stat",
                    width=4,
                ),
                Panel("Active rooms", (t(f"sum({G['rooms_active']}{{{NODE}}})"),), kind="stat", width=4),
                Panel("Active users", (t(f"sum({G['users_active']}{{{NODE}}})"),), kind="stat", width=4),
                Panel(
                    "Delivered messages/s",
                    (t(f"sum(rate({G['delivered_messages']}{{{NODE}}}[{RATE}]))"),),
                    kind="stat",
                    unit="ops",
                    width=4,
                ),
            ],
        ),
        Row(
            "Connections",
            [
                Panel(
                    "Connections by node and route",
                    (t(f"sum by (node, route) ({G['connections']}{{{NODE}}})", "{{node}} {{route}}"),),
                    stack=True,
                ),
                Panel(
                    "Connects and disconnects /s",
                    (
                        t(rate(G["connects"], "node"), "connects {{node}}"),
                        t(rate(G["disconnects"], "node"), "disconnects {{node}}"),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Disconnects by close code /s",
                    (t(rate(G["disconnects"], "code"), "{{code}}"),),
                    description="1000 normal, 1001 going away, 1008 policy, 1012 restart, 4xxx Prism codes",
                    unit="ops",
                    stack=True,
                ),
            ],
        ),
        Row(
            "Traffic",
            [
                Panel(
                    "Frames /s",
                    (
                        t(rate(G["frames_in"], "kind"), "in {{kind}}"),
                        t(rate(G["frames_out"], "node"), "out {{node}}"),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Bytes /s",
                    (
                        t(rate(G["bytes_in"], "node"), "in {{node}}"),
                        t(rate(G["bytes_out"], "node"), "out {{node}}"),
                    ),
                    unit="Bps",
                ),
                Panel(
                    "Backend messages by target and outcome /s",
                    (t(rate(G["deliveries"], "target, outcome"), "{{target}} {{outcome}}"),),
                    description="Messages on conn./user./room./broadcast taken from NATS; outcome delivered, "
                    "no_recipient, gone (a conn. target that no longer exists), not_utf8",
                    unit="ops",
                ),
                Panel(
                    "Messages queued to sockets by target /s",
                    (t(rate(G["delivered_messages"], "target"), "{{target}}"),),
                    description="One per recipient: a room message to 100 members counts 100",
                    unit="ops",
                    stack=True,
                ),
            ],
        ),
        Row(
            "Latency",
            [
                Panel(
                    "Delivery latency (publish to socket write)",
                    (
                        t(quantile(0.5, lat, "target"), "p50 {{target}}"),
                        t(quantile(0.99, lat, "target"), "p99 {{target}}"),
                    ),
                    description="Only messages whose backend set the header Prism-Sent-At",
                    unit="s",
                    width=12,
                ),
                Panel(
                    "Delivery latency heatmap",
                    (
                        Target(
                            f"sum by (le) (increase({lat}_bucket{{{NODE}}}[{RATE}]))", "{{le}}", heatmap=True
                        ),
                    ),
                    kind="heatmap",
                    unit="s",
                    width=12,
                ),
            ],
        ),
        Row(
            "Backpressure and limits",
            [
                Panel(
                    "Outbound backlog (bytes not yet taken by sockets)",
                    (
                        t(f"sum by (node) ({G['outbound_pending_bytes']}{{{NODE}}})", "total {{node}}"),
                        t(
                            f"max by (node) ({G['outbound_max_pending_bytes']}{{{NODE}}})",
                            "worst conn {{node}}",
                        ),
                    ),
                    unit="bytes",
                ),
                Panel(
                    "Slow-consumer closes /s",
                    (t(rate(G["slow_consumers"], "node"), "{{node}}"),),
                    description=f"Clients closed with {SLOW:d}: they read slower than they were sent to",
                    unit="ops",
                ),
                Panel(
                    "Rejections by reason /s",
                    (t(rate(G["rejections"], "reason"), "{{reason}}"),),
                    unit="ops",
                    stack=True,
                ),
                Panel(
                    "Error frames by code /s",
                    (t(rate(G["client_errors"], "code"), "{{code}}"),),
                    unit="ops",
                    stack=True,
                ),
            ],
        ),
        Row(
            "NATS and presence",
            [
                Panel(
                    "NATS connected",
                    (t(f"max by (node) ({G['nats_connected']}{{{NODE}}})", "{{node}}"),),
                    description="1 while the node holds its NATS connection",
                    width=6,
                ),
                Panel(
                    "NATS reconnects",
                    (t(f"sum by (node) (increase({G['nats_reconnects']}{{{NODE}}}[{RATE}]))", "{{node}}"),),
                    width=6,
                ),
                Panel(
                    "Presence operation latency p99",
                    (t(quantile(0.99, pres, "op"), "{{op}}"),),
                    unit="s",
                    width=6,
                ),
                Panel(
                    "Presence errors and sweeps /s",
                    (
                        t(rate(G["presence_errors"], "op"), "errors {{op}}"),
                        t(rate(G["presence_sweeps"], "node"), "sweeps by {{node}}"),
                        t(rate(G["presence_repairs"], "action"), "repairs {{action}}"),
                    ),
                    unit="ops",
                    width=6,
                ),
            ],
        ),
        Row(
            "Per node",
            [
                Panel(
                    "Connections by node",
                    (t(f"sum by (node) ({G['connections']}{{{NODE}}})", "{{node}}"),),
                ),
                Panel(
                    "Messages queued to sockets by node /s",
                    (t(rate(G["delivered_messages"], "node"), "{{node}}"),),
                    unit="ops",
                ),
                Panel(
                    "Build",
                    (Target(f"{G['build']}{{{NODE}}}", instant=True),),
                    kind="table",
                ),
            ],
        ),
    ]


# -- the notification service ------------------------------------------------------------------------------
def notify_rows() -> list[Row]:
    def nrate(name: str, by: str) -> str:
        return rate(N[name], by, selector="")

    proc = N["processing"]
    return [
        Row(
            "Service",
            [
                Panel("Instances ready", (t(f"sum({N['ready']})"),), kind="stat", width=6),
                Panel("Connected to NATS", (t(f"sum({N['nats_connected']})"),), kind="stat", width=6),
                Panel("Backlog", (t(f"sum({N['backlog']})"),), kind="stat", width=6),
                Panel("In flight", (t(f"sum({N['in_flight']})"),), kind="stat", width=6),
            ],
        ),
        Row(
            "Notifications",
            [
                Panel(
                    "Received and delivered by kind /s",
                    (
                        t(nrate("received", "kind"), "received {{kind}}"),
                        t(nrate("delivered", "kind"), "delivered {{kind}}"),
                        t(nrate("no_recipients", "kind"), "no recipients {{kind}}"),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Inbox: stored and replayed /s",
                    (
                        t(f"sum(rate({N['stored']}[{RATE}]))", "stored"),
                        t(f"sum(rate({N['replayed']}[{RATE}]))", "replayed"),
                        t(nrate("expired", "where"), "expired in {{where}}"),
                    ),
                    unit="ops",
                ),
                Panel(
                    "Retries, redeliveries and dead letters /s",
                    (
                        t(nrate("retries", "reason"), "retry {{reason}}"),
                        t(f"sum(rate({N['redelivered']}[{RATE}]))", "redelivered"),
                        t(nrate("dead_lettered", "reason"), "dead letter {{reason}}"),
                    ),
                    unit="ops",
                ),
            ],
        ),
        Row(
            "Latency and load",
            [
                Panel(
                    "Processing time by outcome",
                    (
                        t(quantile(0.5, proc, "outcome", selector=""), "p50 {{outcome}}"),
                        t(quantile(0.99, proc, "outcome", selector=""), "p99 {{outcome}}"),
                    ),
                    unit="s",
                ),
                Panel(
                    "Processing time heatmap",
                    (Target(f"sum by (le) (increase({proc}_bucket[{RATE}]))", "{{le}}", heatmap=True),),
                    kind="heatmap",
                    unit="s",
                ),
                Panel(
                    "Backlog and in flight",
                    (
                        t(f"sum by (instance) ({N['backlog']})", "backlog {{instance}}"),
                        t(f"sum by (instance) ({N['in_flight']})", "in flight {{instance}}"),
                    ),
                ),
            ],
        ),
    ]


# -- JSON -------------------------------------------------------------------------------------------------
def _templating(with_node: bool) -> dict[str, Any]:
    variables: list[dict[str, Any]] = [
        {
            "name": "datasource",
            "label": "Data source",
            "type": "datasource",
            "query": "prometheus",
            "current": {},
            "hide": 0,
            "refresh": 1,
        }
    ]
    if with_node:
        variables.append(
            {
                "name": "node",
                "label": "Node",
                "type": "query",
                "datasource": DATASOURCE,
                "query": {"query": f"label_values({G['ready']}, node)", "refId": "nodes"},
                "definition": f"label_values({G['ready']}, node)",
                "includeAll": True,
                "allValue": ".*",
                "multi": True,
                "current": {"selected": True, "text": ["All"], "value": ["$__all"]},
                "refresh": 2,
                "sort": 1,
                "hide": 0,
            }
        )
    return {"list": variables}


def _target(target: Target, ref: str) -> dict[str, Any]:
    out: dict[str, Any] = {"datasource": DATASOURCE, "expr": target.expr, "refId": ref}
    if target.legend:
        out["legendFormat"] = target.legend
    if target.instant:
        out |= {"instant": True, "range": False, "format": "table"}
    if target.heatmap:
        out["format"] = "heatmap"
    return out


def _panel(panel: Panel, pid: int, x: int, y: int) -> dict[str, Any]:
    refs = "ABCDEFGHIJ"
    out: dict[str, Any] = {
        "id": pid,
        "type": panel.kind,
        "title": panel.title,
        "datasource": DATASOURCE,
        "gridPos": {"h": panel.height, "w": panel.width, "x": x, "y": y},
        "targets": [_target(tg, refs[i]) for i, tg in enumerate(panel.targets)],
        "fieldConfig": {"defaults": {"unit": panel.unit}, "overrides": []},
    }
    if panel.description:
        out["description"] = panel.description
    if panel.kind == "timeseries":
        custom = {"stacking": {"mode": "normal" if panel.stack else "none"}, "fillOpacity": 10}
        out["fieldConfig"]["defaults"]["custom"] = custom
        out["options"] = {
            "legend": {"displayMode": "list", "placement": "bottom"},
            "tooltip": {"mode": "multi"},
        }
    elif panel.kind == "heatmap":
        out["options"] = {"calculate": False, "yAxis": {"unit": panel.unit}, "color": {"scheme": "Oranges"}}
    elif panel.kind == "stat":
        out["options"] = {"reduceOptions": {"calcs": ["lastNotNull"]}, "graphMode": "area"}
    return out


def dashboard(uid: str, title: str, rows: list[Row], *, with_node: bool, tags: list[str]) -> dict[str, Any]:
    panels: list[dict[str, Any]] = []
    pid, y = 1, 0
    for row in rows:
        panels.append({"id": pid, "type": "row", "title": row.title, "collapsed": False, "panels": [],
                       "gridPos": {"h": 1, "w": WIDTH, "x": 0, "y": y}})  # fmt: skip
        pid, y, x, tallest = pid + 1, y + 1, 0, 0
        for panel in row.panels:
            if x + panel.width > WIDTH:
                x, y, tallest = 0, y + tallest, 0
            panels.append(_panel(panel, pid, x, y))
            pid, x, tallest = pid + 1, x + panel.width, max(tallest, panel.height)
        y += tallest
    return {
        "uid": uid,
        "title": title,
        "tags": tags,
        "timezone": "browser",
        "editable": True,
        "schemaVersion": 39,
        "version": 1,
        "refresh": "10s",
        "time": {"from": "now-1h", "to": "now"},
        "graphTooltip": 1,
        "templating": _templating(with_node),
        "annotations": {"list": []},
        "panels": panels,
    }


def dashboards() -> dict[str, dict[str, Any]]:
    """File name -> dashboard, for every dashboard Prism ships."""
    return {
        "prism-gateway.json": dashboard(
            "prism-gateway", "Prism gateway cluster", gateway_rows(), with_node=True, tags=["prism"]
        ),
        "prism-notify.json": dashboard(
            "prism-notify", "Prism notification service", notify_rows(), with_node=False, tags=["prism"]
        ),
    }


def panel_queries(board: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(panel title, PromQL with Grafana's variables still in) for every query of ``board``."""
    for panel in board["panels"]:
        for target in panel.get("targets", []):
            yield panel["title"], target["expr"]


# -- alert rules ------------------------------------------------------------------------------------------
@dataclass(frozen=True)
class Alert:
    name: str
    expr: str
    duration: str
    severity: str
    summary: str
    description: str


def alerts() -> dict[str, list[Alert]]:
    """Group name -> alerting rules."""
    return {
        "prism-gateway": [
            Alert(
                "PrismNatsDisconnected",
                f"{G['nats_connected']} == 0",
                "1m",
                "critical",
                "Gateway node {{ $labels.node }} has lost NATS",
                "Node {{ $labels.node }} has not been connected to NATS for a minute: it can neither deliver "
                "nor publish, and is not ready.",
            ),
            Alert(
                "PrismNodeNotReady",
                f"{G['ready']} == 0",
                "5m",
                "warning",
                "Gateway node {{ $labels.node }} is not ready",
                "Node {{ $labels.node }} has reported not ready for 5 minutes (draining, or NATS down).",
            ),
            Alert(
                "PrismSlowConsumers",
                f"sum by (node) (increase({G['slow_consumers']}[5m])) > 10",
                "5m",
                "warning",
                "Node {{ $labels.node }} closes many slow consumers",
                f"Over 10 connections closed as slow consumers ({SLOW:d}) in 5 minutes on "
                "{{ $labels.node }}: clients cannot keep up with what backends send.",
            ),
            Alert(
                "PrismClientErrorRate",
                f"sum by (node) (rate({G['client_errors']}[5m])) "
                f"/ sum by (node) (rate({G['frames_in']}[5m])) > 0.05",
                "10m",
                "warning",
                "Over 5% of client frames on {{ $labels.node }} get an error frame",
                "Over 5% of the frames clients send to {{ $labels.node }} are answered with an error frame "
                "(see prism_client_errors_total by code).",
            ),
            Alert(
                "PrismRejectionRate",
                f"sum by (node, reason) (rate({G['rejections']}[5m])) > 5",
                "10m",
                "warning",
                "Node {{ $labels.node }} rejects {{ $labels.reason }} at over 5/s",
                "A limit ({{ $labels.reason }}) keeps refusing connections or frames on {{ $labels.node }}.",
            ),
            Alert(
                "PrismPresenceErrors",
                f"sum by (node, op) (increase({G['presence_errors']}[5m])) > 0",
                "5m",
                "warning",
                "Presence {{ $labels.op }} fails on {{ $labels.node }}",
                "Presence KV operations ({{ $labels.op }}) keep failing on {{ $labels.node }}: the registry "
                "may be out of date until the node repairs it.",
            ),
            Alert(
                "PrismPresenceSweepFailures",
                f'sum by (node) (increase({G["presence_errors"]}{{op="sweep"}}[15m])) > 0 '
                f"unless sum by (node) (increase({G['presence_sweeps']}[15m])) > 0",
                "0m",
                "warning",
                "Node {{ $labels.node }} cannot sweep a dead node's presence entries",
                "Sweeps of dead nodes' presence entries fail on {{ $labels.node }} and none succeeded in 15 "
                "minutes: dead connections stay listed as online.",
            ),
            Alert(
                "PrismDeliveryLatencyHigh",
                f"histogram_quantile(0.99, sum by (le) (rate({G['delivery_latency']}_bucket[5m]))) > 0.5",
                "10m",
                "warning",
                "p99 delivery latency is over 0.5 s",
                "Messages stamped with Prism-Sent-At take over 0.5 s from publish to socket write (p99).",
            ),
        ],
        "prism-notify": [
            Alert(
                "PrismNotifyDeadLetters",
                f"sum(increase({N['dead_lettered']}[10m])) > 0",
                "0m",
                "warning",
                "Notifications were dead-lettered",
                "Notifications went to the dead-letter stream in the last 10 minutes; read them there "
                "(header Prism-Notify-Error says why).",
            ),
            Alert(
                "PrismNotifyNatsDisconnected",
                f"{N['nats_connected']} == 0",
                "1m",
                "critical",
                "A notification service instance has lost NATS",
                "Instance {{ $labels.instance }} has not been connected to NATS for a minute.",
            ),
            Alert(
                "PrismNotifyBacklog",
                f"max({N['backlog']}) > 1000",
                "10m",
                "warning",
                "Over 1000 notifications wait in the stream",
                "The backlog has stayed over 1000 for 10 minutes: add instances or look for slow receipts.",
            ),
        ],
    }


def _q(text: str) -> str:
    return json.dumps(text)  # a JSON string is a valid double-quoted YAML scalar


def rules_yaml() -> str:
    lines = ["# Generated by `python -m grafana.dashboards` from the metric names; do not edit.", "groups:"]
    for group, rules in alerts().items():
        lines += [f"  - name: {group}", "    rules:"]
        for a in rules:
            lines += [
                f"      - alert: {a.name}",
                f"        expr: {_q(a.expr)}",
                f"        for: {a.duration}",
                "        labels:",
                f"          severity: {a.severity}",
                "        annotations:",
                f"          summary: {_q(a.summary)}",
                f"          description: {_q(a.description)}",
            ]
    return "\n".join(lines) + "\n"


# -- files ------------------------------------------------------------------------------------------------
def rendered() -> dict[Path, str]:
    """Every generated file and its exact contents."""
    files = {
        DASHBOARDS_DIR / name: json.dumps(board, indent=2, sort_keys=True) + "\n"
        for name, board in dashboards().items()
    }
    files[ALERTS_FILE] = rules_yaml()
    # The Helm chart ships copies (Helm can only read files inside the chart): keep them identical.
    for path in list(files):
        files[CHART_FILES_DIR / path.name] = files[path]
    return files


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m grafana.dashboards", description=__doc__.split("\n")[0])
    parser.add_argument("--check", action="store_true", help="only report files that differ; exit 1 if any")
    args = parser.parse_args(argv)
    stale = [path for path, text in rendered().items() if not path.exists() or path.read_text() != text]
    if args.check:
        for path in stale:
            print(f"out of date: {path.relative_to(HERE.parent)}", file=sys.stderr)
        return 1 if stale else 0
    for path in stale:
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(rendered()[path])
        print(f"wrote {path.relative_to(HERE.parent)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
