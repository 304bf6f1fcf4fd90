"""Reading composed YAML nodes the way skopeo's ``yaml.v3`` decoding reads them (see ``load.py``):
scalars keep their source text, yaml.v3's booleans, null as absent, duplicate and unknown keys refused,
every failure a ConfigError naming the file, the YAML path and the line."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, NoReturn, TypeVar

import yaml
from msgspec import Struct, field
from yaml.nodes import MappingNode, Node, ScalarNode, SequenceNode

from mirror.errors import ConfigError, InvalidReference

NULL_TAG = "tag:yaml.org,2002:null"
_TRUE = frozenset({"y", "Y", "yes", "Yes", "YES", "on", "On", "ON"})
_FALSE = frozenset({"n", "N", "no", "No", "NO", "off", "Off", "OFF"})
_PLAIN_BOOLS = {"true": True, "True": True, "TRUE": True, "false": False, "False": False, "FALSE": False}
T = TypeVar("T")
A = TypeVar("A")


def yaml_problem(exc: yaml.MarkedYAMLError) -> str:
    mark = exc.problem_mark or exc.context_mark
    where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
    problem = (exc.problem or str(exc)).split("\n", 1)[0]
    return f"YAML syntax error{where}: {problem}"


def compose(loader: yaml.SafeLoader, source: str) -> Node | None:
    try:
        root = loader.get_node() if loader.check_node() else None
        while loader.check_node():
            extra = loader.get_node()
            if extra is not None and not is_null(extra):
                line = extra.start_mark.line + 1
                raise ConfigError(f"{source}: a second YAML document at line {line} (only one is read)")
    except yaml.MarkedYAMLError:
        raise
    except yaml.YAMLError as exc:  # reader errors: bad characters
        raise ConfigError(f"{source}: invalid YAML: {str(exc).splitlines()[0]}") from None
    return None if root is None or is_null(root) else root


def is_null(node: Node) -> bool:
    return isinstance(node, ScalarNode) and node.tag == NULL_TAG


def node_kind(node: Node, secret: bool = False) -> str:
    if isinstance(node, MappingNode):
        return "a mapping"
    if isinstance(node, SequenceNode):
        return "a list"
    return "a value" if secret else repr(str(node.value)[:60])


class NodeReader(Struct):
    source: str
    loader: yaml.SafeLoader
    flattened: set[int] = field(default_factory=set)  # mapping nodes already checked (aliases repeat them)

    def fail(self, path: str, node: Node | None, message: str) -> NoReturn:
        line = f" (line {node.start_mark.line + 1})" if node is not None else ""
        if not path.isprintable():  # a key holding a line break or a control character
            path = repr(path)[1:-1]
        raise ConfigError(f"{self.source}: {path}: {message}{line}")

    def guard(self, path: str, node: Node, fn: Callable[[A], T], arg: A) -> T:
        """``fn(arg)``, turning its ConfigError/InvalidReference into one naming the location."""
        try:
            return fn(arg)
        except (ConfigError, InvalidReference) as exc:
            self.fail(path, node, exc.message)

    def mapping(
        self, path: str, node: Node, allowed: tuple[str, ...] | None = None, secret: bool = False
    ) -> list[tuple[str, Node, Node]]:
        """(key, key node, value node) in order; null is empty; duplicates and unknown keys fail."""
        if is_null(node):
            return []
        if not isinstance(node, MappingNode):
            self.fail(path or "(top level)", node, f"expected a mapping, got {node_kind(node, secret)}")
        seen: dict[str, Node] = {}
        for knode, _ in [] if id(node) in self.flattened else node.value:
            if knode.tag == "tag:yaml.org,2002:merge":
                continue
            key = self.key(path, knode)
            if key in seen:
                self.fail(join_path(path, key), knode, f"duplicate key (first at line {seen[key].start_mark.line + 1})")
            seen[key] = knode
        self.loader.flatten_mapping(node)
        self.flattened.add(id(node))
        entries: dict[str, tuple[Node, Node]] = {}
        for knode, vnode in node.value:
            entries[self.key(path, knode)] = (knode, vnode)
        for key, (knode, _) in entries.items():
            if allowed is not None and key not in allowed:
                self.fail(join_path(path, key), knode, unknown_key(key, allowed))
        return [(key, knode, vnode) for key, (knode, vnode) in entries.items()]

    def key(self, path: str, knode: Node) -> str:
        if not isinstance(knode, ScalarNode):
            self.fail(path or "(top level)", knode, f"keys must be strings, got {node_kind(knode)}")
        return "" if is_null(knode) else str(knode.value)

    def string(self, path: str, node: Node, secret: bool = False) -> str | None:
        if is_null(node):
            return None
        if not isinstance(node, ScalarNode):
            self.fail(path, node, f"expected a string, got {node_kind(node, secret)}")
        return str(node.value)

    def boolean(self, path: str, node: Node) -> bool | None:
        if is_null(node):
            return None
        if isinstance(node, ScalarNode):
            value = str(node.value)
            if node.style is None and value in _PLAIN_BOOLS:
                return _PLAIN_BOOLS[value]
            if value in _TRUE or value in _FALSE:
                return value in _TRUE
            hint = " (remove the quotes)" if value in _PLAIN_BOOLS else ""
            self.fail(path, node, f"expected true or false, got {value[:60]!r}{hint}")
        self.fail(path, node, f"expected true or false, got {node_kind(node)}")

    def number(self, path: str, node: Node, kind: type[int] | type[float]) -> int | float | None:
        if is_null(node):
            return None
        value: Any = self.construct(path, node) if isinstance(node, ScalarNode) else node
        ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
        if isinstance(value, bool) or not ok:
            what = "an integer" if kind is int else "a number"
            self.fail(path, node, f"expected {what}, got {node_kind(node)}")
        return value  # type: ignore[no-any-return]

    def construct(self, path: str, node: ScalarNode) -> Any:
        """The scalar's YAML value; an explicit tag the text does not fit (``!!int abc``, ``!!timestamp x``)
        or an integer too long to convert is a ConfigError, not a crash in PyYAML's constructors."""
        try:
            return self.loader.construct_object(node, deep=True)
        except (ValueError, TypeError, AttributeError, OverflowError):
            self.fail(path, node, f"{node_kind(node)} is not a valid {node.tag.rsplit(':', 1)[-1]}")

    def strings(self, path: str, node: Node, expected: str) -> list[tuple[str, str, Node]]:
        """(path[i], text, node) of a list of strings; null -> [], null items dropped (as yaml.v3)."""
        if is_null(node):
            return []
        if not isinstance(node, SequenceNode):
            self.fail(path, node, f"expected {expected}, got {node_kind(node)}")
        out: list[tuple[str, str, Node]] = []
        for i, item in enumerate(node.value):
            where = f"{path}[{i}]"
            if not isinstance(item, ScalarNode):
                self.fail(where, item, f"expected a string, got {node_kind(item)}")
            if not is_null(item):
                out.append((where, str(item.value), item))
        return out


def join_path(path: str, key: str) -> str:
    return f"{path}.{key}" if path else key


def unknown_key(key: str, allowed: tuple[str, ...]) -> str:
    from difflib import get_close_matches  # only for a misspelt key's message

    close = get_close_matches(key, allowed, n=1)
    hint = f"; did you mean {close[0]}?" if close else ""
    return f"unknown key (expected one of: {', '.join(allowed)}{hint})"
