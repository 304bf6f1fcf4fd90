"""mirror.http."""
