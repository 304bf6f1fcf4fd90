"""Sync configuration: skopeo-compatible YAML and mirror's documented extensions."""
