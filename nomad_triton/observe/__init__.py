"""Observability: Prometheus service discovery and scrape configs, the Grafana dashboard."""
