"""skopeo's signing flags for ``copy`` and ``sync``, and ``generate-sigstore-key``.

``--sign-by FINGERPRINT`` (GnuPG simple signing), ``--sign-by-sigstore-private-key PATH`` and
``--sign-by-sigstore PARAMFILE`` (key-based sigstore; Fulcio and Rekor are refused),
``--sign-passphrase-file PATH`` (its first line, as skopeo reads it), ``--sign-identity REF`` (copy).
A sigstore key without a passphrase file is unlocked by prompting on a terminal, as skopeo does.
"""

from __future__ import annotations

import argparse
import os
import sys

from mirror.cli.flags import get
from mirror.errors import MirrorError, UsageError

# The signing code (and cryptography, PyYAML) is imported only when a command signs: the flags are added,
# and commands that do not sign run, without it.
TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: mirror --help does not need it
if TYPE_CHECKING:
    from pathlib import Path
    from typing import Any

    from mirror.signing import sigstore
    from mirror.signing.signers import Signer

MAX_FILE = 1 << 20
PARAM_FIELDS = frozenset({"privateKeyFile", "privateKeyPassphraseFile", "fulcio", "rekorURL"})


def add_sign_flags(parser: argparse.ArgumentParser, identity: bool) -> None:
    parser.add_argument("--sign-by", metavar="FINGERPRINT",
                        help="sign the image with the GnuPG key FINGERPRINT (simple signing)")
    parser.add_argument("--sign-by-sigstore-private-key", metavar="PATH",
                        help="sign the image with the sigstore private key at PATH")
    parser.add_argument("--sign-by-sigstore", metavar="PARAMFILE",
                        help="sign the image as a sigstore parameter file says (private keys only)")
    parser.add_argument("--sign-passphrase-file", metavar="PATH", help="read the signing key's passphrase from PATH")
    parser.add_argument("--sign-by-sq-fingerprint", metavar="FINGERPRINT", help=argparse.SUPPRESS)
    if identity:
        parser.add_argument("--sign-identity", metavar="REFERENCE",
                            help="identity of the signed image, a full docker reference (default: the destination)")


def signers(args: argparse.Namespace) -> tuple[tuple[Signer, ...], str | None]:
    """(the signers the flags ask for, --sign-identity), every file read and key unlocked now."""
    fingerprint, key_file = get(args, "sign_by"), get(args, "sign_by_sigstore_private_key")
    param_file, passphrase_file = get(args, "sign_by_sigstore"), get(args, "sign_passphrase_file")
    if get(args, "sign_by_sq_fingerprint"):
        raise UsageError("--sign-by-sq-fingerprint: Sequoia-PGP signing is not supported (use --sign-by with GnuPG)")
    if not (fingerprint or key_file or param_file):
        return (), _identity(get(args, "sign_identity"))
    from mirror.signing.signers import GpgSigner, SigstoreSigner

    if passphrase_file and fingerprint and key_file:
        raise UsageError("Only one of --sign-by and --sign-by-sigstore-private-key can be used with "
                         "--sign-passphrase-file")
    out: list[Signer] = []
    if fingerprint:
        out.append(GpgSigner(fingerprint, passphrase_file))
    if key_file:
        passphrase = read_passphrase(passphrase_file) if passphrase_file else prompt_passphrase(key_file)
        out.append(SigstoreSigner(_private_key(key_file, passphrase)))
    if param_file:
        out.append(_param_file_signer(param_file))
    return tuple(out), _identity(get(args, "sign_identity"))


def _identity(text: str | None) -> str | None:
    if text is None:
        return None
    from mirror.core.reference import parse_docker

    try:
        ref = parse_docker(text)
    except MirrorError as exc:
        raise UsageError(f"Could not parse --sign-identity: {exc}") from None
    if str(ref) != text:  # normalising adds nothing: a full name, with its tag or digest
        raise UsageError(f"--sign-identity {text!r} must be a fully specified docker reference with a tag or digest "
                         f"(e.g. {ref.repo}:latest)")
    return text


def read_passphrase(path: str) -> str:
    """The first line of ``path``, without its newline (as gpg and skopeo read a passphrase file)."""
    return _read(path, "passphrase file").split(b"\n", 1)[0].decode("utf-8", "replace")


def prompt_passphrase(key_file: str) -> str:
    if not sys.stdin.isatty():
        raise UsageError(f"Cannot prompt for a passphrase for key {key_file}, standard input is not a TTY")
    import getpass

    return getpass.getpass(f"Passphrase for key {key_file}: ")


def _read(path: str, what: str) -> bytes:
    from mirror.signing.standalone import read_limited  # only when signing: not on every start-up

    return read_limited(path, MAX_FILE, what)


def _private_key(path: str, passphrase: str) -> sigstore.PrivateKey:
    from mirror.signing import sigstore

    pem = _read(path, "private key")
    try:
        return sigstore.load_private_key(pem, passphrase.encode(), f"initializing private key {path}")
    except MirrorError as exc:
        raise UsageError(str(exc)) from None


def _param_file_signer(path: str) -> Signer:
    """containers-sigstore-signing-params.yaml(5), key-based only."""
    import yaml

    where = f"--sign-by-sigstore {path}"
    try:
        doc: Any = yaml.safe_load(_read(path, "sigstore parameter file"))
    except (yaml.YAMLError, RecursionError, UnicodeDecodeError) as exc:
        raise UsageError(f"{where}: {' '.join(str(exc).split())}") from None
    if not isinstance(doc, dict):
        raise UsageError(f"{where}: expected a YAML mapping")
    unknown = sorted(str(k) for k in doc if k not in PARAM_FIELDS)
    if unknown:
        raise UsageError(f"{where}: field {unknown[0]} not found in the parameter file format")
    if doc.get("fulcio") is not None or doc.get("rekorURL"):
        raise UsageError(f"{where}: Fulcio and Rekor signing are not supported; mirror signs with a private key "
                         "(privateKeyFile) only")
    key_file, passphrase_file = doc.get("privateKeyFile"), doc.get("privateKeyPassphraseFile")
    if not isinstance(key_file, str) or not key_file:
        raise UsageError(f"{where}: no signing method (privateKeyFile) is specified")
    if passphrase_file is not None and not isinstance(passphrase_file, str):
        raise UsageError(f"{where}: privateKeyPassphraseFile must be a path")
    passphrase = read_passphrase(passphrase_file) if passphrase_file else prompt_passphrase(key_file)
    from mirror.signing.signers import SigstoreSigner

    return SigstoreSigner(_private_key(key_file, passphrase))


def generate_sigstore_key(args: argparse.Namespace) -> int:
    """``generate-sigstore-key --output-prefix PREFIX``: PREFIX.private (0600) and PREFIX.pub."""
    if not args.output_prefix:
        raise UsageError("Usage: generate-sigstore-key --output-prefix PREFIX")
    from pathlib import Path

    public, private = Path(args.output_prefix + ".pub"), Path(args.output_prefix + ".private")
    for path in (public, private):
        if os.path.lexists(path):
            raise UsageError(f'Refusing to overwrite existing "{path}"')
    passphrase = read_passphrase(args.passphrase_file) if args.passphrase_file else prompt_passphrase(str(private))
    from mirror.signing import sigstore

    private_pem, public_pem = sigstore.generate_key_pair(passphrase.encode())
    _write_new(private, private_pem, 0o600)
    try:
        _write_new(public, public_pem, 0o644)
    except MirrorError:
        private.unlink(missing_ok=True)
        raise
    print(f'Key written to "{private}" and "{public}"')
    return 0


def _write_new(path: Path, data: bytes, mode: int) -> None:
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, mode)
        with os.fdopen(fd, "wb") as f:
            f.write(data)
    except OSError as exc:
        raise MirrorError(f"writing {path}: {exc.strerror or exc}") from None
