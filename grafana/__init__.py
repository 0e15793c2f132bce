"""Dashboards as code (:mod:`grafana.dashboards`), provisioning files and alert rules."""
