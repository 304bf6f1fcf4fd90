"""mirror.engine."""
