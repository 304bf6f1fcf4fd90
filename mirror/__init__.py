"""mirror: fast, skopeo-compatible container image mirroring."""

__version__ = "0.1.0"
