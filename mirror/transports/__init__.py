"""mirror.transports."""
