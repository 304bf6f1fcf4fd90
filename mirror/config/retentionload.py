"""The sync YAML's retention keys (``mirror.config.retention``), read with the loader's node reader:

```yaml
registry.example.com:
  keep-latest: 5                      # or {count: 5, by: created}
  newer-than: 90d
  images-keep-latest: {nginx: {count: 3, by: created}}
  images-newer-than: {redis: 30d}
```
"""

from __future__ import annotations

from yaml.nodes import MappingNode, Node

from mirror.config.retention import BY, MAX_KEEP, Retention, parse_age
from mirror.config.yamlnodes import NodeReader, is_null, node_kind
from mirror.errors import ConfigError

KEEP_LATEST_KEYS = ("count", "by")


def keep_latest(ctx: NodeReader, path: str, node: Node | None) -> Retention:
    """``keep-latest: N`` or ``keep-latest: {count: N, by: semver|created}``."""
    if node is None or is_null(node):
        return Retention()
    if isinstance(node, MappingNode):
        values = {k: v for k, _, v in ctx.mapping(path, node, KEEP_LATEST_KEYS)}
        if "count" not in values:
            ctx.fail(path, node, "count is required (keep-latest: {count: N, by: semver|created})")
        count = _count(ctx, f"{path}.count", values["count"])
        by = ctx.string(f"{path}.by", values["by"]) if "by" in values else None
        if by is not None and by not in BY:
            ctx.fail(f"{path}.by", values["by"], f"expected one of {', '.join(BY)}, got {by[:40]!r}")
        return Retention(keep_latest=count, by=by)
    return Retention(keep_latest=_count(ctx, path, node))


def _count(ctx: NodeReader, path: str, node: Node) -> int:
    value = ctx.number(path, node, int)
    if value is None or not 1 <= value <= MAX_KEEP:
        ctx.fail(path, node, f"expected an integer from 1 to {MAX_KEEP}, got {node_kind(node)}")
    return int(value)


def newer_than(ctx: NodeReader, path: str, node: Node | None) -> Retention:
    """``newer-than: 90d`` (w, d, h, m, s; parts add up: 1d12h)."""
    if node is None or is_null(node):
        return Retention()
    text = ctx.string(path, node) or ""
    try:
        return Retention(newer_than=parse_age(text, "newer-than"))
    except ConfigError:
        ctx.fail(path, node, f"invalid age {text[:40]!r} (expected e.g. 90d, 12h, 2w, 1d12h)")
