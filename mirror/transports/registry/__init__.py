"""mirror.transports.registry."""
