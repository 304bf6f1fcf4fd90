"""mirror.cli."""
