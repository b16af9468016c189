"""Grafana dashboards as code, and their provisioning for docker compose."""
