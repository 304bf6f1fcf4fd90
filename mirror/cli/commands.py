"""One short function per subcommand: parsed arguments → ops → rendered output."""

from __future__ import annotations

import argparse
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import TypeVar

import anyio
from msgspec import Struct
from msgspec.structs import replace

from mirror.cli import parity, reformatflags, render, signflags
from mirror.cli.flags import get, stdin_secret
from mirror.cli.logsetup import configure_logging
from mirror.cli.start import run_loop
from mirror.core.reference import parse_docker
from mirror.engine.image import CopyOptions, MultiArch
from mirror.errors import ManifestError, MirrorError, UsageError
from mirror.http import authfile
from mirror.http.credentials import CredentialOptions
from mirror.http.ratelimit import HostPolicy
from mirror.http.tls import TLSOptions
from mirror.ops import copy as copy_ops
from mirror.ops import inspect as inspect_ops
from mirror.ops import login as login_ops
from mirror.runtime import GlobalOptions, Runtime, open_runtime
from mirror.signing import standalone
from mirror.signing.policy import Policy, load_policy
from mirror.transports.local import files
from mirror.transports.side import LocalOptions, SideOptions

T = TypeVar("T")


def global_options(args: argparse.Namespace) -> GlobalOptions:
    return GlobalOptions(
        debug=get(args, "debug", False),
        command_timeout=get(args, "command_timeout"),
        override_os=get(args, "override_os"),
        override_arch=get(args, "override_arch"),
        override_variant=get(args, "override_variant"),
        user_agent_prefix=get(args, "user_agent_prefix"),
        retry_times=max(0, get(args, "retry_times", 0)),
        retry_delay=get(args, "retry_delay"),
        state=get(args, "state"),
        chunk_size=get(args, "chunk_size"),
        registries_d=get(args, "registries_d"),
    )


def signature_policy(args: argparse.Namespace) -> Policy | None:
    """The policy.json ``copy`` and ``sync`` enforce, loaded up front as skopeo does; None with
    ``--insecure-policy``."""
    return None if get(args, "insecure_policy", False) else load_policy(get(args, "policy"))


def side_options(args: argparse.Namespace, prefix: str = "", fallback_authfile: str | None = None) -> SideOptions:
    """Credentials, TLS and local-transport settings of one side, from ``--[src-|dest-]…`` flags."""
    p = prefix.replace("-", "_")
    tls_verify = get(args, f"{p}tls_verify")
    registry_tls = parity.tls_verify(args, prefix)  # also skopeo's deprecated --tls-verify forms
    creds = CredentialOptions(
        creds=get(args, f"{p}creds"),
        username=get(args, f"{p}username"),
        password=get(args, f"{p}password"),
        registry_token=get(args, f"{p}registry_token"),
        no_creds=bool(get(args, f"{p}no_creds", False)),
        authfile=get(args, f"{p}authfile") or fallback_authfile,
    )
    local = LocalOptions(tmpdir=get(args, "tmpdir"), daemon_host=get(args, f"{p}daemon_host"),
                         daemon_cert_dir=get(args, f"{p}cert_dir"), daemon_tls_verify=tls_verify is not False,
                         shared_blob_dir=get(args, f"{p}shared_blob_dir"))
    return SideOptions(creds, TLSOptions(verify=registry_tls is not False,
                                         cert_dir=get(args, f"{p}cert_dir")), local=local)


def run(args: argparse.Namespace, body: Callable[[Runtime], Awaitable[T]],
        policies: Mapping[str, HostPolicy] | None = None) -> T:
    """Run ``body`` on uvloop inside a Runtime, bounded by ``--command-timeout``."""
    options = global_options(args)
    configure_logging(options.debug, get(args, "log_format"))

    async def main() -> T:
        async with open_runtime(options, policies=policies) as rt, anyio.create_task_group() as tg:
            # SIGTERM cancels the run like Ctrl-C does, so uploads stop at a resumable point.
            tg.start_soon(_cancel_on_sigterm, tg.cancel_scope)
            try:
                if options.command_timeout:
                    try:
                        with anyio.fail_after(options.command_timeout):
                            return await body(rt)
                    except TimeoutError:
                        raise MirrorError(f"command timed out after {options.command_timeout:g}s") from None
                return await body(rt)
            finally:
                tg.cancel_scope.cancel()
        raise MirrorError("cancelled")

    return run_loop(main)


async def _cancel_on_sigterm(scope: anyio.CancelScope) -> None:
    with anyio.open_signal_receiver(signal.SIGTERM) as signals:
        async for _ in signals:
            scope.cancel()
            raise MirrorError("terminated (SIGTERM); run again to resume")


def inspect(args: argparse.Namespace) -> int:
    name = copy_ops.parse_name(args.image)
    side = side_options(args)
    if args.raw and not args.config:
        if args.format:
            raise UsageError("--format cannot be used with --raw")
        render.raw(run(args, lambda rt: inspect_ops.inspect_raw(rt, name, side)))
        return 0
    if args.config:
        result = run(args, lambda rt: inspect_ops.inspect_config(rt, name, side, bool(args.raw)))
        if isinstance(result, bytes):
            render.raw(result)
        else:
            render.json_out(result)
        return 0
    info = run(args, lambda rt: inspect_ops.inspect(rt, name, side, bool(args.no_tags)))
    if args.format:
        from mirror.cli.gotemplate import render as render_template  # the Go template engine: only for --format

        sys.stdout.write(render_template(args.format, info) + "\n")
    else:
        render.json_out(info)
    return 0


def list_tags(args: argparse.Namespace) -> int:
    name = copy_ops.parse_name(args.image)
    side = side_options(args)
    tags = run(args, lambda rt: inspect_ops.list_tags(rt, name, side))
    if name.transport == "docker":  # skopeo's shapes: a registry's listing names its repository
        render.json_out({"Repository": str(parse_docker(name.rest).repo), "Tags": tags})
    else:
        render.json_out({"Tags": tags})
    return 0


class CopySetup(Struct, frozen=True):
    """What ``copy``'s flags mean, read once (keys unlocked, policy loaded) for one copy or many."""

    args: argparse.Namespace
    base: CopyOptions
    src_side: SideOptions
    dst_side: SideOptions
    referrers: tuple[str, ...] | None
    policy: Policy | None

    def options(self, dest_transport: str) -> CopyOptions:
        """The copy options for a destination of this transport (the layer flags depend on it)."""
        options = replace(self.base, reformat=reformatflags.reformat(self.args, dest_transport))
        reformatflags.refuse_with_referrers(options.reformat, self.referrers is not None)
        return options


def copy_setup(args: argparse.Namespace) -> CopySetup:
    mode = MultiArch(args.multi_arch) if args.multi_arch else MultiArch.SYSTEM
    if args.all:
        if args.multi_arch and mode is not MultiArch.ALL:
            raise UsageError("--all conflicts with --multi-arch=" + mode.value)
        mode = MultiArch.ALL
    options = global_options(args)
    signers, identity = signflags.signers(args)
    base = CopyOptions(multi_arch=mode, platform=options.platform, remove_signatures=bool(args.remove_signatures),
                       signers=signers, sign_identity=identity)
    src_side = side_options(args, "src-", args.authfile)
    dst_side = side_options(args, "dest-", args.authfile)
    dst_side = replace(dst_side, local=replace(dst_side.local, additional_tags=tuple(args.additional_tag)))
    if args.referrers_artifact_type and not args.referrers:
        raise UsageError("--referrers-artifact-type needs --referrers")
    referrers = tuple(dict.fromkeys(args.referrers_artifact_type)) if args.referrers else None
    return CopySetup(args, base, src_side, dst_side, referrers, signature_policy(args))


def copy(args: argparse.Namespace) -> int:
    if args.pairs is not None:  # many copies in one process
        from mirror.cli import pairs

        return pairs.copy_pairs(args)
    if args.source is None or args.destination is None:
        missing = ", ".join(n for n, v in (("SOURCE-IMAGE", args.source), ("DESTINATION-IMAGE", args.destination))
                            if v is None)  # argparse's words, as when both were required positionals
        raise UsageError(f"the following arguments are required: {missing} (see 'mirror copy --help')")
    if args.jobs is not None or args.report is not None:
        raise UsageError("--jobs and --report go with --pairs")
    src = copy_ops.parse_name(args.source)
    dst = copy_ops.parse_name(args.destination)
    if args.additional_tag and dst.transport != "docker-archive":
        raise UsageError("--additional-tag is only supported for docker-archive destinations")
    setup = copy_setup(args)
    copy_options = setup.options(dst.transport)
    progress = render.CopyProgress(quiet=bool(args.quiet))
    record = run(args, lambda rt: copy_ops.copy(rt, src, dst, setup.src_side, setup.dst_side, copy_options,
                                                max(1, args.image_parallel_copies), progress, setup.policy,
                                                setup.referrers))
    progress.finish(record)
    if args.digestfile:
        Path(args.digestfile).write_text(str(record.digest))
    return 0


def delete(args: argparse.Namespace) -> int:
    name = copy_ops.parse_name(args.image)
    side = side_options(args)
    run(args, lambda rt: copy_ops.delete(rt, name, side))
    return 0


def manifest_digest(args: argparse.Namespace) -> int:
    try:
        raw = Path(args.manifest).read_bytes()
    except OSError as exc:
        raise UsageError(f"reading manifest {args.manifest}: {exc.strerror}") from None
    try:
        print(standalone.manifest_digest(raw))
    except ManifestError as exc:
        raise ManifestError(f"{args.manifest}: {exc}") from None
    return 0


def standalone_sign(args: argparse.Namespace) -> int:
    if not args.output:
        raise UsageError("--output (-o) is required: where to write the signature")
    signature = standalone.sign(args.manifest, args.reference, args.fingerprint, args.passphrase_file)
    output = Path(args.output)
    try:
        if output.exists() and not output.is_file():  # /dev/null, a pipe: written in place, as skopeo writes
            output.write_bytes(signature)
        else:
            files.atomic_write_sync(output, signature)
    except OSError as exc:
        raise MirrorError(f"writing signature {args.output}: {exc.strerror or exc}") from None
    return 0


def standalone_verify(args: argparse.Namespace) -> int:
    verified = standalone.verify(args.manifest, args.reference, args.fingerprint, args.signature)
    print(f"Signature verified, digest {verified.digest}")
    return 0


def login(args: argparse.Namespace) -> int:
    if not args.registry:
        raise UsageError("login needs a registry name, e.g. mirror login registry.example.com")
    key = login_ops.registry_key(args.registry)
    env = dict(os.environ)
    if args.get_login:
        user = login_ops.get_login(key, args.authfile, env)
        if user is None:
            raise MirrorError(f"not logged into {key}")
        print(user)
        return 0
    if args.password_stdin:
        if args.password:
            raise UsageError("--password and --password-stdin are mutually exclusive")
        if not args.username:
            raise UsageError("--password-stdin needs --username")
        password = stdin_secret()
    else:
        password = args.password
    username = args.username
    if not username or not password:
        username, password = render.prompt_credentials(username, password)
    tls = TLSOptions(verify=parity.tls_verify(args) is not False, cert_dir=args.cert_dir)
    path = authfile.default_auth_path(args.authfile, env)
    run(args, lambda rt: login_ops.login(rt, key, username, password, tls, path))
    print("Login Succeeded!")
    return 0


def logout(args: argparse.Namespace) -> int:
    env = dict(os.environ)
    path = authfile.default_auth_path(args.authfile, env)
    if args.all:
        login_ops.logout(None, path, True)
        print("Removed login credentials for all registries")
        return 0
    if not args.registry:
        raise UsageError("logout needs a registry name or --all")
    key = login_ops.registry_key(args.registry)
    if not login_ops.logout(key, path, False):
        raise MirrorError(f"not logged into {key}")
    print(f"Removed login credentials for {key}")
    return 0

