"""The ``mirror`` entry point: answers ``--version`` before importing anything, then hands over to
:mod:`mirror.cli.main` (argparse and the command line's flag helpers)."""

from __future__ import annotations

import gc
import sys

from mirror import __version__

TYPE_CHECKING = False  # not typing's: importing typing would cost ``--version`` and ``--help`` ~5 ms
if TYPE_CHECKING:
    from collections.abc import Awaitable, Callable
    from typing import TypeVar

    T = TypeVar("T")

#: ``--version`` as the first argument, in pflag's bool forms too (``--version=false`` is a no-op).
VERSION_FLAGS = ("--version", "-v", *(f"--version={value}" for value in ("true", "True", "TRUE", "t", "T", "1")))


def main() -> int:
    args = sys.argv[1:]
    if args[:1] and args[0] in VERSION_FLAGS:  # what the parser would print (skopeo: "skopeo version 1.9.3")
        print(f"mirror version {__version__}")
        return 0
    # The collector stays off while the command imports what it needs (tens of thousands of long-lived
    # objects: each pass over them is wasted work, ~4 % of a one-image copy); run_loop turns it back on.
    gc.disable()
    from mirror.cli.main import main as run

    try:
        return run(args)
    finally:
        # At exit the interpreter's collector would walk every object still alive (all of aiohttp's,
        # anyio's and mirror's modules: ~80 ms of CPU after a one-image copy here). Frozen, they are left
        # to reference counting; files are closed by their context managers, atexit handlers still run.
        gc.freeze()


def run_loop(main: Callable[[], Awaitable[T]]) -> T:
    """Run ``main`` on uvloop through anyio: every command's event loop starts here. What start-up
    imported is frozen (the collector never walks it again) and the collector runs from here on."""
    import anyio

    gc.freeze()
    gc.enable()
    return anyio.run(main, backend="asyncio", backend_options={"use_uvloop": True})
