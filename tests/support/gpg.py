"""Throw-away GnuPG homes and keys for the signature tests (real gpg, no passphrase prompts)."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GpgHome:
    env: dict[str, str]  # os.environ with GNUPGHOME set

    def new_key(self, email: str, passphrase: str = "") -> str:
        """Generate an ed25519 signing key; returns its fingerprint."""
        subprocess.run(["gpg", "--batch", "--quiet", "--pinentry-mode", "loopback", "--passphrase", passphrase,
                        "--quick-gen-key", email, "ed25519", "sign", "never"], env=self.env, check=True,
                       capture_output=True)
        listing = subprocess.run(["gpg", "--batch", "--with-colons", "--list-secret-keys", email], env=self.env,
                                 check=True, capture_output=True, text=True).stdout
        return next(line.split(":")[9] for line in listing.splitlines() if line.startswith("fpr:"))

    def public_key(self, fingerprint: str) -> bytes:
        """The ASCII-armored public key."""
        return subprocess.run(["gpg", "--batch", "--armor", "--export", fingerprint], env=self.env, check=True,
                              capture_output=True).stdout

    def close(self) -> None:
        subprocess.run(["gpgconf", "--kill", "all"], env=self.env, check=False, capture_output=True)


def gpg_home(path: Path) -> GpgHome:
    path.mkdir(mode=0o700, parents=True)
    return GpgHome({**os.environ, "GNUPGHOME": str(path)})
