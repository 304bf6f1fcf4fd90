"""How a transport reaches one side of an operation: credentials, TLS and local-transport settings."""

from __future__ import annotations

from msgspec import Struct, field

from mirror.http.credentials import Credential, CredentialOptions
from mirror.http.tls import TLSOptions


class LocalOptions(Struct, frozen=True):
    """Settings local transports need from the command line."""

    tmpdir: str | None = None
    daemon_host: str | None = None       # docker-daemon: --src-daemon-host / --dest-daemon-host
    daemon_cert_dir: str | None = None   # docker-daemon on tcp://: ca.pem, cert.pem, key.pem (--src-cert-dir)
    daemon_tls_verify: bool = True       # docker-daemon on tcp://: --src-tls-verify / --dest-tls-verify
    additional_tags: tuple[str, ...] = ()  # docker-archive destination: --additional-tag
    shared_blob_dir: str | None = None   # oci: --src-shared-blob-dir / --dest-shared-blob-dir (blobs kept there)


class SideOptions(Struct, frozen=True):
    """How to reach one side (source or destination) of an operation: everything a transport needs
    besides the image name. Live and possibly secret: built by the runtime, never serialised."""

    creds: CredentialOptions = field(default_factory=CredentialOptions)
    tls: TLSOptions = field(default_factory=TLSOptions)
    credential: Credential | None = None  # explicit (sync YAML ``credentials``): beats ``creds``
    chunk_size: int | None = None         # upload chunk size for this side's registry (YAML ``chunk-size``)
    local: LocalOptions = field(default_factory=LocalOptions)

    def __repr__(self) -> str:  # never print credentials
        return f"SideOptions(tls={self.tls!r}, chunk_size={self.chunk_size!r}, local={self.local!r})"
