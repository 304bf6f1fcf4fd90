"""``mirror`` command line: skopeo's commands and flags, one-line errors, skopeo's exit codes."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Sequence

from mirror import __version__
from mirror.cli import parity, syncflags
from mirror.cli.flags import Parser, add_bool, add_pairs_flags, add_referrer_flags, duration, size_arg
from mirror.cli.lazyparse import LazyCommands, LazyModule
from mirror.cli.reformatflags import add_compression_flags, add_format_flags
from mirror.cli.signflags import add_sign_flags
from mirror.cli.start import VERSION_FLAGS
from mirror.errors import MirrorError

commands = LazyModule("mirror.cli.commands")
synccmd = LazyModule("mirror.cli.synccmd")
signflags = LazyModule("mirror.cli.signflags")

DESCRIPTION = """\
Copy, inspect and mirror container images between registries (skopeo-compatible).

Images are named TRANSPORT:REFERENCE, e.g. docker://registry.example.com/app:1.0
"""


def _globals(parser: argparse.ArgumentParser, suppress: bool) -> None:
    """Global flags; accepted before or after the command, as cobra's persistent flags are."""
    d = argparse.SUPPRESS if suppress else None
    g = parser.add_argument_group("global flags")
    g.add_argument("--debug", action="store_true", default=d or False, help="enable debug output")
    g.add_argument("--command-timeout", type=duration, default=d, metavar="DURATION",
                   help="timeout for the whole command (e.g. 90s, 5m)")
    g.add_argument("--override-arch", default=d, metavar="ARCH", help="use ARCH instead of the host's")
    g.add_argument("--override-os", default=d, metavar="OS", help="use OS instead of the host's")
    g.add_argument("--override-variant", default=d, metavar="VARIANT", help="use VARIANT instead of the host's")
    g.add_argument("--tmpdir", default=d, metavar="DIR", help="directory for temporary files")
    g.add_argument("--insecure-policy", action="store_true", default=d or False,
                   help="copy and sync without checking the signature policy")
    g.add_argument("--policy", default=d, metavar="PATH",
                   help="signature policy for copy and sync (default: ~/.config/containers/policy.json, "
                        "else /etc/containers/policy.json)")
    g.add_argument("--registries.d", dest="registries_d", default=d, metavar="DIR",
                   help="registries.d directory: where registry images' signatures are stored (lookaside, "
                        "sigstore attachments)")
    g.add_argument("--user-agent-prefix", default=d, metavar="PREFIX", help="prefix for the User-Agent")
    g.add_argument("--log-format", choices=("console", "json"), default=d, help="log event format")
    parity.hidden_globals(g, d)


def _auth_flags(parser: argparse.ArgumentParser, prefix: str = "", what: str = "the registry") -> None:
    p = f"--{prefix}"
    dest = prefix.replace("-", "_")
    parser.add_argument(f"{p}authfile", dest=f"{dest}authfile", metavar="PATH",
                        help=f"auth file for {what} (default: $REGISTRY_AUTH_FILE, then containers' auth.json)")
    parser.add_argument(f"{p}creds", dest=f"{dest}creds", metavar="USER[:PASS]", help=f"credentials for {what}")
    parser.add_argument(f"{p}username", dest=f"{dest}username", metavar="USER", help=f"username for {what}")
    parser.add_argument(f"{p}password", dest=f"{dest}password", metavar="PASS", help=f"password for {what}")
    parser.add_argument(f"{p}registry-token", dest=f"{dest}registry_token", metavar="TOKEN",
                        help=f"bearer token for {what}")
    add_bool(parser, f"{p}no-creds", f"access {what} anonymously", dest=f"{dest}no_creds")
    parser.add_argument(f"{p}cert-dir", dest=f"{dest}cert_dir", metavar="DIR",
                        help=f"directory with *.crt CAs and *.cert/*.key client pairs for {what}")
    add_bool(parser, f"{p}tls-verify", f"require HTTPS and verify certificates for {what} (default true; "
             "false also allows plain HTTP)", dest=f"{dest}tls_verify")


def _retry_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--retry-times", type=int, default=0, metavar="N",
                        help="retry each failed request N times (at least 3: connection errors, "
                             "timeouts, 408/429/5xx)")
    parser.add_argument("--retry-delay", type=duration, default=None, metavar="DURATION",
                        help="fixed delay between retries (default: exponential backoff)")


def _state_flags(parser: argparse.ArgumentParser | argparse._ArgumentGroup) -> None:
    parser.add_argument("--state", metavar="PATH", help="state file for resumable uploads and known blob "
                        "locations (default $MIRROR_STATE, else ~/.local/state/mirror/state.sqlite; 'none': off)")
    parser.add_argument("--chunk-size", type=size_arg, metavar="SIZE",
                        help="chunk size for resumable uploads of large blobs (default 16MiB)")


Subparsers = argparse._SubParsersAction  # the type of add_subparsers()' result


def _command(sub: Subparsers[Parser], name: str, help_text: str, usage_args: str) -> Parser:
    """A subcommand parser, with the global flags also accepted after the command."""
    p: Parser = sub.add_parser(name, help=help_text, description=help_text, usage=f"mirror {name} [flags] {usage_args}")
    _globals(p, suppress=True)
    return p


def _inspect(sub: Subparsers[Parser]) -> None:
    p = _command(sub, "inspect", "Inspect an image in a registry: digest, tags, config, layers", "IMAGE-NAME")
    p.add_argument("image", metavar="IMAGE-NAME", help="e.g. docker://registry.example.com/app:1.0")
    add_bool(p, "--raw", "print the raw manifest (or config with --config)")
    add_bool(p, "--config", "print the image config instead of the summary")
    add_bool(p, "--no-tags", "do not list the repository's tags", short="-n")
    p.add_argument("--format", "-f", metavar="TEMPLATE", help="Go template for the output, e.g. '{{.Digest}}'")
    p.add_argument("--daemon-host", metavar="HOST", help="docker-daemon: the daemon to use (default $DOCKER_HOST)")
    parity.shared_blob_dir_flag(p)
    _auth_flags(p)
    _retry_flags(p)
    p.set_defaults(func=commands.inspect)


def _list_tags(sub: Subparsers[Parser]) -> None:
    p = _command(sub, "list-tags", "List the tags of a repository or of a docker-archive file",
                 "docker://REPOSITORY | docker-archive:PATH")
    p.add_argument("image", metavar="REPOSITORY-NAME",
                   help="e.g. docker://registry.example.com/app or docker-archive:images.tar")
    _auth_flags(p)
    _retry_flags(p)
    p.set_defaults(func=commands.list_tags)


def _copy(sub: Subparsers[Parser]) -> None:
    p = _command(sub, "copy", "Copy an image from one location to another",
                 "SOURCE-IMAGE DESTINATION-IMAGE | --pairs FILE")
    p.add_argument("source", metavar="SOURCE-IMAGE", nargs="?")
    p.add_argument("destination", metavar="DESTINATION-IMAGE", nargs="?")
    add_pairs_flags(p)
    add_bool(p, "--all", "copy all images of a list (same as --multi-arch=all)", short="-a")
    p.add_argument("--multi-arch", choices=("system", "all", "index-only"), default=None,
                   help="for lists: copy the system's image (default), all images, or only the index")
    add_format_flags(p, "in the destination")
    add_compression_flags(p)
    add_bool(p, "--remove-signatures", "do not copy signatures")
    add_sign_flags(p, identity=True)
    p.add_argument("--digestfile", metavar="PATH", help="write the digest of the copied manifest to PATH")
    add_bool(p, "--quiet", "suppress progress output", short="-q")
    p.add_argument("--image-parallel-copies", type=int, default=6, metavar="N",
                   help="maximum number of blobs copied in parallel (default 6)")
    p.add_argument("--additional-tag", action="append", default=[], metavar="TAG",
                   help="additional tags (docker-archive destinations only)")
    add_referrer_flags(p)
    p.add_argument("--src-daemon-host", metavar="HOST", help="docker-daemon: source daemon (default $DOCKER_HOST)")
    p.add_argument("--dest-daemon-host", metavar="HOST",
                   help="docker-daemon: destination daemon (default $DOCKER_HOST)")
    p.add_argument("--authfile", metavar="PATH", help="auth file for both sides")
    _auth_flags(p, "src-", "the source")
    _auth_flags(p, "dest-", "the destination")
    parity.shared_blob_dir_flag(p, "src-")
    parity.shared_blob_dir_flag(p, "dest-")
    parity.deprecated_copy_flags(p)
    _retry_flags(p)
    _state_flags(p)
    p.set_defaults(func=commands.copy)


def _sync(sub: Subparsers[Parser]) -> None:
    p = _command(sub, "sync", "Synchronize images between registries, directories and OCI layouts",
                 "--src TRANSPORT --dest TRANSPORT SOURCE DESTINATION")
    p.add_argument("source", metavar="SOURCE",
                   help="docker: registry/repo[:tag]; yaml: a sync YAML file; dir: a directory of dir: images; "
                        "oci: an OCI layout (its named images)")
    p.add_argument("destination", metavar="DESTINATION",
                   help="docker: registry[:port][/namespace]; dir: a directory; oci: an OCI layout directory")
    p.add_argument("--src", "-s", choices=("docker", "dir", "yaml", "oci"), required=True,
                   help="source transport (oci, an extension: every named image of one OCI layout, to docker)")
    p.add_argument("--dest", "-d", choices=("docker", "dir", "oci"), required=True,
                   help="destination transport (oci: one shared OCI layout for the whole sync)")
    add_bool(p, "--scoped", "prefix destination names with the full source registry/repository path")
    p.add_argument("--append-suffix", default="", metavar="SUFFIX", help="string appended to destination tags")
    add_bool(p, "--all", "copy all images of multi-arch lists", short="-a")
    add_bool(p, "--dry-run", "compare source and destination and report, without writing anything")
    add_bool(p, "--keep-going", "continue after an image fails; exit 3 at the end if any failed")
    add_format_flags(p, "when syncing images to the destination")
    add_bool(p, "--remove-signatures", "do not copy signatures")
    add_sign_flags(p, identity=False)
    p.add_argument("--digestfile", metavar="PATH", help="write 'DIGEST DESTINATION' for every image synced")
    p.add_argument("--authfile", metavar="PATH", help="auth file for both sides")
    _auth_flags(p, "src-", "the source")
    _auth_flags(p, "dest-", "the destination")
    parity.deprecated_copy_flags(p)
    _retry_flags(p)
    _sync_extensions(p.add_argument_group("mirror extensions"))
    p.set_defaults(func=synccmd.sync)


def _sync_extensions(e: argparse._ArgumentGroup) -> None:
    _state_flags(e)
    e.add_argument("--jobs", "-j", type=int, default=32, metavar="N", help="images in flight at once (default 32)")
    e.add_argument("--blob-jobs", type=int, default=16, metavar="N", help="blob transfers at once (default 16)")
    add_bool(e, "--assume-immutable-tags", "skip tags the destination already has, without comparing digests")
    add_bool(e, "--digest-tags", "also copy the cosign-style tags (sha256-<hex>.sig/.att/.sbom) of every image copied")
    add_referrer_flags(e)
    e.add_argument("--report", metavar="FILE", help="write one JSON record per image to FILE")
    e.add_argument("--metrics", metavar="FILE",
                   help="write the run's figures to FILE in Prometheus text format (node_exporter textfile)")
    e.add_argument("--prune", dest="prune", action="store_const", const="report", default="off",
                   help="report destination tags missing at the source; --prune=delete deletes them")
    for mode in ("report", "delete"):
        e.add_argument(f"--prune={mode}", dest="prune", action="store_const", const=mode, help=argparse.SUPPRESS)
    e.add_argument("--platform", action="append", default=[], metavar="OS/ARCH[/VARIANT]",
                   help="copy only these platforms of multi-arch images (repeatable)")
    add_bool(e, "--quiet", "no progress display and no summary line", short="-q")
    e.add_argument("--shard", metavar="K/N",
                   help="run only shard K (0 to N-1) of N: the destination repositories it owns (static sharding)")
    e.add_argument("--shard-count", type=int, metavar="N",
                   help="shard count, K from $JOB_COMPLETION_INDEX (a Kubernetes Indexed Job)")
    e.add_argument("--queue", metavar="URL",
                   help="plan into this PostgreSQL queue (postgresql://...) and wait while `mirror worker`s copy")
    e.add_argument("--max-attempts", type=int, default=3, metavar="N",
                   help="with --queue: tries of an image (worker deaths included) before it is failed (default 3)")
    syncflags.add_flags(e)


def _delete(sub: Subparsers[Parser]) -> None:
    p = _command(sub, "delete", "Delete an image's manifest from a registry (all tags pointing at it)", "IMAGE-NAME")
    p.add_argument("image", metavar="IMAGE-NAME")
    p.add_argument("--daemon-host", metavar="HOST", help="docker-daemon: the daemon to use (default $DOCKER_HOST)")
    parity.shared_blob_dir_flag(p)
    _auth_flags(p)
    _retry_flags(p)
    p.set_defaults(func=commands.delete)


def _manifest_digest(sub: Subparsers[Parser]) -> None:
    p = _command(sub, "manifest-digest", "Compute the digest of a manifest file", "MANIFEST")
    p.add_argument("manifest", metavar="MANIFEST")
    p.set_defaults(func=commands.manifest_digest)


def _standalone_sign(sub: Subparsers[Parser]) -> None:
    p = _command(sub, "standalone-sign", "Sign a manifest file with GnuPG (containers/image simple signing)",
                 "MANIFEST DOCKER-REFERENCE KEY-FINGERPRINT --output|-o SIGNATURE")
    p.add_argument("manifest", metavar="MANIFEST")
    p.add_argument("reference", metavar="DOCKER-REFERENCE", help="the image name the signature vouches for")
    p.add_argument("fingerprint", metavar="KEY-FINGERPRINT", help="the GnuPG key to sign with ($GNUPGHOME keyring)")
    p.add_argument("--output", "-o", metavar="SIGNATURE", help="write the signature to SIGNATURE")
    p.add_argument("--passphrase-file", metavar="PATH", help="file holding the passphrase of the key")
    p.set_defaults(func=commands.standalone_sign)


def _standalone_verify(sub: Subparsers[Parser]) -> None:
    p = _command(sub, "standalone-verify", "Verify a signature of a manifest file with GnuPG",
                 "MANIFEST DOCKER-REFERENCE KEY-FINGERPRINT SIGNATURE")
    p.add_argument("manifest", metavar="MANIFEST")
    p.add_argument("reference", metavar="DOCKER-REFERENCE", help="the image name the signature must name")
    p.add_argument("fingerprint", metavar="KEY-FINGERPRINT", help="the key that must have made the signature")
    p.add_argument("signature", metavar="SIGNATURE")
    p.set_defaults(func=commands.standalone_verify)


def _generate_sigstore_key(sub: Subparsers[Parser]) -> None:
    p = _command(sub, "generate-sigstore-key", "Generate a sigstore public/private key pair",
                 "--output-prefix PREFIX")
    p.add_argument("--output-prefix", metavar="PREFIX", help="write the keys to PREFIX.pub and PREFIX.private")
    p.add_argument("--passphrase-file", metavar="PATH",
                   help="read the private key's passphrase from PATH (default: prompt on the terminal)")
    p.set_defaults(func=signflags.generate_sigstore_key)


def _login(sub: Subparsers[Parser]) -> None:
    p = _command(sub, "login", "Log in to a registry and store the credentials", "REGISTRY")
    p.add_argument("registry", metavar="REGISTRY", nargs="?")
    p.add_argument("--username", "-u", metavar="USER")
    p.add_argument("--password", "-p", metavar="PASS")
    add_bool(p, "--password-stdin", "read the password from standard input")
    add_bool(p, "--get-login", "print the username stored for REGISTRY")
    p.add_argument("--authfile", metavar="PATH", help="auth file to write (default: $REGISTRY_AUTH_FILE, "
                   "then ${XDG_RUNTIME_DIR}/containers/auth.json)")
    p.add_argument("--cert-dir", metavar="DIR")
    add_bool(p, "--tls-verify", "require HTTPS and verify certificates (default true)")
    p.set_defaults(func=commands.login)


def _logout(sub: Subparsers[Parser]) -> None:
    p = _command(sub, "logout", "Remove stored credentials for a registry", "REGISTRY")
    p.add_argument("registry", metavar="REGISTRY", nargs="?")
    add_bool(p, "--all", "remove the credentials of every registry", short="-a")
    p.add_argument("--authfile", metavar="PATH")
    p.set_defaults(func=commands.logout)


def _worker(sub: Subparsers[Parser]) -> None:
    p = _command(sub, "worker", "Sync images from a PostgreSQL queue that `mirror sync --queue` fills (any number "
                 "of workers, on any machines)", "--queue URL")
    p.add_argument("--queue", metavar="URL", help="the PostgreSQL queue (postgresql://...; default $MIRROR_QUEUE)")
    p.add_argument("--jobs", "-j", type=int, default=4, metavar="N", help="images in flight at once (default 4)")
    p.add_argument("--blob-jobs", type=int, default=8, metavar="N", help="blob transfers at once (default 8)")
    p.add_argument("--lease", type=duration, default=30.0, metavar="DURATION",
                   help="a worker silent this long is presumed dead and its images are retried (default 30s)")
    p.add_argument("--credentials-from", metavar="YAML",
                   help="sync YAML whose registry credentials the queued images refer to (by registry name)")
    p.add_argument("--authfile", metavar="PATH", help="auth file for both sides")
    _auth_flags(p, "src-", "the source")
    _auth_flags(p, "dest-", "the destination")
    _retry_flags(p)
    p.add_argument("--chunk-size", type=size_arg, metavar="SIZE",
                   help="chunk size for resumable uploads of large blobs (default 16MiB)")
    p.set_defaults(func=lambda args: _lazy_worker(args))


def _lazy_worker(args: argparse.Namespace) -> int:
    from mirror.cli import workercmd  # imports the PostgreSQL client only for this command

    return workercmd.worker(args)


#: The subcommands, in the order ``mirror --help`` lists them.
COMMANDS: tuple[Callable[[Subparsers[Parser]], None], ...] = (
    _inspect, _list_tags, _copy, _sync, _delete, _manifest_digest, _standalone_sign, _standalone_verify,
    _generate_sigstore_key, _login, _logout, _worker,
)

def build_parser() -> Parser:
    parser = Parser(prog="mirror", description=DESCRIPTION, formatter_class=argparse.RawDescriptionHelpFormatter)
    version = f"mirror version {__version__}"  # skopeo's shape: "skopeo version 1.9.3"
    parser.add_argument("--version", "-v", action="version", version=version, help="print the version and exit")
    for flag in VERSION_FLAGS[2:]:  # pflag's bool syntax; =false is a no-op there
        parser.add_argument(flag, action="version", version=version, help=argparse.SUPPRESS)
    for value in ("false", "False", "FALSE", "f", "F", "0"):
        parser.add_argument(f"--version={value}", action="store_const", const=None, dest="no_version",
                            help=argparse.SUPPRESS)
    parity.root_flags(parser)
    _globals(parser, suppress=False)
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=Parser, action=LazyCommands)
    assert isinstance(sub, LazyCommands)
    for add_command in COMMANDS:
        sub.add_command(add_command)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args_list = list(sys.argv[1:] if argv is None else argv)
    debug = "--debug" in args_list
    try:
        parser = build_parser()
        args = parser.parse_args(args_list)
        if args.command is None:
            parser.print_help()
            return 0
        parity.before(args)
        result: int = args.func(args)
        return result
    except BaseExceptionGroup as group:
        exc = _first(group)
        if debug:
            _print_traceback()
        if isinstance(exc, MirrorError):
            print(f"mirror: {_one_line(exc)}", file=sys.stderr)
            return exc.exit_code
        print(f"mirror: internal error: {type(exc).__name__}: {_line(exc)}", file=sys.stderr)
        return 1
    except MirrorError as exc:
        if debug:
            _print_traceback()
        print(f"mirror: {_one_line(exc)}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("mirror: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # the only bare catch: never show a traceback without --debug
        if debug:
            _print_traceback()
        print(f"mirror: internal error: {type(exc).__name__}: {_line(exc)}", file=sys.stderr)
        return 1


def _first(group: BaseExceptionGroup[BaseException]) -> BaseException:
    """The error to report from a task group: the first MirrorError, else the first error."""
    from mirror.aio import leaf_errors  # anyio: not imported at start-up

    leaves = leaf_errors(group)
    return next((exc for exc in leaves if isinstance(exc, MirrorError)), leaves[0])


def _line(exc: BaseException) -> str:
    return str(exc).splitlines()[0] if str(exc) else ""


def _one_line(exc: MirrorError) -> str:
    """The whole message on one line (a registry's text inside it may hold line breaks)."""
    return " ".join(str(exc).splitlines())


def _print_traceback() -> None:
    import traceback  # only with --debug: importing it costs ~0.1 s at every start

    traceback.print_exc()
