"""mirror.core."""
