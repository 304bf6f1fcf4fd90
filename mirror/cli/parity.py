"""skopeo 1.x flags kept for compatibility: hidden aliases and deprecated forms, shared blob directories.

What skopeo accepts but hides from ``--help`` (``cmd/skopeo/main.go`` and ``utils.go``), with its meaning:

- global ``--tls-verify`` (before the command only; a local flag of skopeo's root command): the
  registry TLS default for every image of the command (``DockerInsecureSkipTLSVerify``); a
  per-image flag (``--tls-verify`` of the command, ``--src-tls-verify``, ``--dest-tls-verify``)
  beats it. It does not reach ``docker-daemon:`` (skopeo sets the daemon's TLS only from the
  per-image flag). skopeo warns that it is deprecated; so does mirror.
- ``copy`` / ``sync`` ``--tls-verify``: both sides' registry TLS unless ``--src-tls-verify`` /
  ``--dest-tls-verify`` say otherwise; deprecated, with skopeo's warning.
- ``copy`` / ``sync`` ``--screds`` / ``--dcreds``: ``--src-creds`` / ``--dest-creds``.
- global ``--registries-conf FILE``: see :mod:`mirror.config.registriesconf`.

Nothing here imports more than the standard library and the error tree: ``mirror --version`` and
``--help`` stay fast.
"""

from __future__ import annotations

import argparse
import sys

from mirror.cli.flags import add_bool, get

TYPE_CHECKING = False  # typing.TYPE_CHECKING without importing typing: mirror --help does not need it
if TYPE_CHECKING:
    from typing import Any

GLOBAL_TLS = "global_tls_verify"
_HIDDEN = argparse.SUPPRESS


def hidden_globals(group: argparse._ArgumentGroup, default: Any) -> None:
    """Hidden persistent global flags (accepted before or after the command)."""
    group.add_argument("--registries-conf", dest="registries_conf", default=default, metavar="FILE", help=_HIDDEN)


def root_flags(parser: argparse.ArgumentParser) -> None:
    """Flags of the root command only: the deprecated global ``--tls-verify``."""
    add_bool(parser, "--tls-verify", _HIDDEN, dest=GLOBAL_TLS)


def deprecated_copy_flags(parser: argparse.ArgumentParser) -> None:
    """``copy`` and ``sync``: hidden ``--tls-verify`` (both sides), ``--screds``, ``--dcreds``."""
    add_bool(parser, "--tls-verify", _HIDDEN, dest="tls_verify")
    parser.add_argument("--screds", dest="src_creds", metavar="USER[:PASS]", help=_HIDDEN)
    parser.add_argument("--dcreds", dest="dest_creds", metavar="USER[:PASS]", help=_HIDDEN)


def shared_blob_dir_flag(parser: argparse.ArgumentParser, prefix: str = "") -> None:
    """``--[src-|dest-]shared-blob-dir``: the ``oci:`` transport's blobs live in DIR, not in ``blobs/``."""
    parser.add_argument(f"--{prefix}shared-blob-dir", dest=f"{prefix.replace('-', '_')}shared_blob_dir",
                        metavar="DIR", help="oci: read and write blobs in DIR (DIR/sha256/<hex>), shared "
                                            "by many layouts, instead of the layout's blobs/")


def tls_verify(args: argparse.Namespace, prefix: str = "") -> bool | None:
    """The registry TLS setting of one side: its own flag, else ``copy``/``sync``'s deprecated
    ``--tls-verify``, else the deprecated global one; None: not given (verify)."""
    p = prefix.replace("-", "_")
    value: bool | None = get(args, f"{p}tls_verify")
    if value is None and p:
        value = get(args, "tls_verify")
    if value is None:
        value = get(args, GLOBAL_TLS)
    return value


def before(args: argparse.Namespace) -> None:
    """skopeo's warnings for the deprecated forms, and the ``--registries-conf`` check; run before the
    command, as skopeo's ``PersistentPreRunE``."""
    if get(args, GLOBAL_TLS) is not None:
        _warn("'--tls-verify' is deprecated, please set this on the specific subcommand")
    if getattr(args, "command", None) in ("copy", "sync") and get(args, "tls_verify") is not None:
        _warn("'--tls-verify' is deprecated, instead use: --src-tls-verify, --dest-tls-verify")
    path = get(args, "registries_conf")
    if path:
        from mirror.config.registriesconf import check_registries_conf

        check_registries_conf(path)


def _warn(text: str) -> None:
    print(f"mirror: warning: {text}", file=sys.stderr)
