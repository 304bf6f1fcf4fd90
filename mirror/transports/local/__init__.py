"""Local transports: ``dir:``, ``oci:`` and ``oci-archive:`` (files on a disk)."""
