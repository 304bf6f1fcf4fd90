"""skopeo's hidden global ``--registries-conf FILE`` (containers-registries.conf(5)).

mirror does not apply registries.conf: a ``docker://`` reference always names the registry it reaches.
The flag is accepted, as skopeo accepts it, and the file is read as containers/image reads it (a
missing or malformed file is an error). What in it would change where an image comes from or how it is
reached is refused in one line rather than ignored: ``[[registry]]`` mirrors, ``location`` rewrites
of a ``prefix``, ``blocked`` and ``insecure`` registries (also version 1's ``[registries.insecure]``
and ``[registries.block]``), and credential helpers other than ``containers-auth.json`` (the auth
files mirror reads). What cannot change a fully qualified ``docker://`` reference (short-name
``aliases``, ``unqualified-search-registries``, ``short-name-mode``) is accepted.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from mirror.errors import ConfigError

AUTH_FILES_HELPER = "containers-auth.json"


def check_registries_conf(path: str) -> None:
    """Read ``path`` as registries.conf; ConfigError if it is unreadable or asks for what mirror does not do."""
    import tomllib  # only when the flag is given

    where = f"--registries-conf {path}"
    try:
        data = tomllib.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"{where}: loading registries configuration: {exc.strerror or exc}") from None
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(f"{where}: loading registries configuration: {exc}") from None
    found = unsupported_settings(data)
    if found:
        raise ConfigError(f"{where}: mirror does not apply registries.conf, and this file sets "
                          f"{'; '.join(found)} (use the real registry names and --tls-verify instead)")


def unsupported_settings(data: dict[str, Any]) -> list[str]:
    """What in a parsed registries.conf would change which registry an image comes from, or how."""
    found: list[str] = []
    registries = data.get("registry")
    for entry in registries if isinstance(registries, list) else []:
        if not isinstance(entry, dict):
            continue
        prefix = str(entry.get("prefix") or entry.get("location") or "?")
        if entry.get("mirror"):
            found.append(f"mirrors for {prefix}")
        location = entry.get("location")
        if location and entry.get("prefix") and location != entry.get("prefix"):
            found.append(f"{prefix} redirected to {location}")
        for key in ("blocked", "insecure"):
            if entry.get(key) is True:
                found.append(f"{prefix} {key}")
    legacy = data.get("registries")
    for key in ("insecure", "block"):
        table = legacy.get(key) if isinstance(legacy, dict) else None
        listed = table.get("registries") if isinstance(table, dict) else None
        if listed:
            found.append(f"[registries.{key}] {', '.join(map(str, listed))}")
    helpers = data.get("credential-helpers")
    if helpers and helpers != [AUTH_FILES_HELPER]:
        found.append(f"credential-helpers {helpers}")
    return found
