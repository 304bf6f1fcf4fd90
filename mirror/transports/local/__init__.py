"""Local transports: ``dir:``, ``oci:``, ``oci-archive:`` and ``docker-archive:`` (files on a disk),
``docker-daemon:`` (the Docker Engine API) and ``containers-storage:`` (podman's store, via podman)."""
