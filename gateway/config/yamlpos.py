"""YAML that remembers where every key and value came from.

PyYAML's composer gives nodes with marks; we construct plain Python data from them ourselves so
that each path (`("devices", 0, "port")`) keeps the file, line and column of its key and its
value. That is what lets configuration errors say `line.yaml:14:11: devices[0].port: ...`.
Duplicate keys are an error here (PyYAML silently keeps the last one).

Whatever the text, the outcome is data or a YamlProblem with a mark, never another exception:
bytes that are no UTF-8, scalars PyYAML's constructors choke on (`2001-13-45`, an integer of
thousands of digits, `!!float x`), merge keys of a non-mapping, nesting deeper than MAX_DEPTH,
a recursive alias, and aliases that expand to more than MAX_NODES values (an alias bomb: 300
bytes can stand for 10^9 values) are problems too.
"""

from __future__ import annotations

import re
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]

# Far beyond any line file or profile (they nest some 6 deep and hold a few thousand values),
# far below what recursion and memory allow.
MAX_DEPTH = 100
_LINE_END = re.compile("\r\n|[\r\n\x85\u2028\u2029]")  # what YAML counts as a line end
MAX_NODES = 200_000


@dataclass(frozen=True, slots=True)
class Mark:
    file: str
    line: int  # 1-based
    col: int  # 1-based

    def __str__(self) -> str:
        return f"{self.file}:{self.line}:{self.col}"


@dataclass(frozen=True, slots=True)
class Where:
    """Marks of one path: its key (for mappings entries) and its value."""

    key: Mark | None
    value: Mark


class YamlProblem(Exception):
    """The file cannot be read as YAML; `mark` says where, `problem` says what."""

    def __init__(
        self, mark: Mark, problem: str, got: str | None = None, path: PathKey | None = None
    ) -> None:
        super().__init__(f"{mark}: {problem}")
        self.mark = mark
        self.problem = problem
        self.got = got
        self.path = path  # of the value, when the problem is one value's


@dataclass(slots=True)
class Located:
    """Plain data plus the marks of every path in it."""

    data: Any
    marks: dict[PathKey, Where]

    def where(self, path: PathKey, *, key: bool = False) -> Mark:
        """The mark of `path`, or of its nearest ancestor that has one."""
        p = path
        while p not in self.marks and p:
            p = p[:-1]
        w = self.marks[p]
        if key and p == path and w.key is not None:
            return w.key
        return w.value


def _mark(file: str, m: yaml.Mark | None) -> Mark:
    if m is None:
        return Mark(file, 1, 1)
    return Mark(file, m.line + 1, m.column + 1)


def load(path: Path, display: str | None = None) -> Located:
    """Read a YAML file (one document) into data + marks. Raises YamlProblem, OSError."""
    file = display if display is not None else str(path)
    data = path.read_bytes()
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        before = data[: exc.start]
        line = before.count(b"\n") + 1
        col = len(before) - (before.rfind(b"\n") + 1) + 1
        raise YamlProblem(
            Mark(file, line, col),
            f"the file is not UTF-8 (byte 0x{data[exc.start]:02x}); save it as UTF-8",
        ) from None
    return loads(text, file)


class _Unreadable(Exception):
    def __init__(self, mark: yaml.Mark | None, problem: str) -> None:
        self.mark = mark
        self.problem = problem


class _Loader(yaml.SafeLoader):
    """PyYAML's safe loader, with a nesting limit: its composer recurses per level."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.depth = 0

    def compose_node(self, parent: yaml.Node | None, index: Any) -> yaml.Node | None:
        self.depth += 1
        try:
            if self.depth > MAX_DEPTH:
                raise _Unreadable(
                    self.peek_event().start_mark,  # type: ignore[no-untyped-call]
                    f"nested more than {MAX_DEPTH} deep",
                )
            return super().compose_node(parent, index)
        finally:
            self.depth -= 1


def _compose_all(text: str) -> list[yaml.Node | None]:
    loader = _Loader(text)
    try:
        nodes: list[yaml.Node | None] = []
        while loader.check_node():
            nodes.append(loader.get_node())
        return nodes
    except ValueError as exc:  # the scanner's chr() for an escape beyond U+10FFFF (`"\U10010000"`)
        problem = "a character escape beyond U+10FFFF" if "chr()" in str(exc) else str(exc)
        raise _Unreadable(loader.get_mark(), problem) from None
    finally:
        loader.dispose()


def loads(text: str, file: str) -> Located:
    try:
        nodes = _compose_all(text)
    except _Unreadable as exc:
        raise YamlProblem(_mark(file, exc.mark), f"invalid YAML: {exc.problem}") from None
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot parse"
        raise YamlProblem(_mark(file, mark), f"invalid YAML: {problem}") from None
    except yaml.reader.ReaderError as exc:  # a control character: no mark, but its position
        before = text[: exc.position]
        line = len(_LINE_END.findall(before)) + 1
        col = len(_LINE_END.split(before)[-1]) + 1
        char = exc.character if isinstance(exc.character, int) else ord(exc.character)
        raise YamlProblem(
            Mark(file, line, col), f"invalid YAML: unacceptable character #x{char:04x}"
        ) from None
    except yaml.YAMLError as exc:  # no mark: one line of what PyYAML says
        raise YamlProblem(Mark(file, 1, 1), "invalid YAML: " + " ".join(str(exc).split())) from None
    root = nodes[0] if nodes else None
    if root is None:
        raise YamlProblem(Mark(file, 1, 1), "the file is empty")
    if len(nodes) > 1:
        second = nodes[1]
        raise YamlProblem(
            _mark(file, second.start_mark if second is not None else None),
            "more than one YAML document in the file",
        )
    check_expansion(root, file)
    marks: dict[PathKey, Where] = {}
    builder = _Builder(file, marks)
    data = builder.build(root, ())
    return Located(data, marks)


def _children(node: yaml.Node) -> list[yaml.Node]:
    if isinstance(node, yaml.MappingNode):
        return [n for pair in node.value for n in pair]
    if isinstance(node, yaml.SequenceNode):
        return list(node.value)
    return []


def check_expansion(root: yaml.Node, file: str) -> None:
    """Refuse a document whose aliases make it recursive, deeper than MAX_DEPTH or larger than
    MAX_NODES values once expanded (as building the data would expand them), before building
    it. Each distinct node is visited once, without recursion, so an alias bomb is refused in
    about the time it takes to read it."""
    size: dict[int, int] = {}  # id(node) -> values it expands to
    depth: dict[int, int] = {}
    open_: set[int] = set()  # nodes being visited: the path from the root
    stack: list[tuple[yaml.Node, bool]] = [(root, False)]
    while stack:
        node, done = stack.pop()
        key = id(node)
        if done:
            open_.discard(key)
            children = _children(node)
            size[key] = 1 + sum(size[id(c)] for c in children)
            depth[key] = 1 + max((depth[id(c)] for c in children), default=0)
            if size[key] > MAX_NODES:
                raise YamlProblem(
                    _mark(file, node.start_mark),
                    f"aliases expand this to more than {MAX_NODES} values",
                )
            if depth[key] > MAX_DEPTH:
                raise YamlProblem(
                    _mark(file, node.start_mark), f"aliases nest this more than {MAX_DEPTH} deep"
                )
            continue
        if key in size:
            continue
        if key in open_:  # `&a [*a]`: an alias of a node it is inside
            raise YamlProblem(_mark(file, node.start_mark), "a recursive alias")
        open_.add(key)
        stack.append((node, True))
        stack.extend((c, False) for c in _children(node) if id(c) not in size)


class _Builder:
    def __init__(self, file: str, marks: dict[PathKey, Where]) -> None:
        self.file = file
        self.marks = marks
        self.constructor = yaml.SafeLoader("")  # its constructor turns scalar nodes into values

    def build(self, node: yaml.Node, path: PathKey, key_mark: Mark | None = None) -> Any:
        """Plain data of `node` (checked with `check_expansion` first), marks into `marks`."""
        self.marks[path] = Where(key_mark, _mark(self.file, node.start_mark))
        if isinstance(node, yaml.MappingNode):
            # `<<` merge keys: let PyYAML flatten them first, as its own constructor would.
            try:
                self.constructor.flatten_mapping(node)
            except yaml.constructor.ConstructorError as exc:  # `<<:` of a scalar
                raise YamlProblem(
                    _mark(self.file, node.start_mark), f"invalid YAML: {exc.problem}"
                ) from None
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node, path)
                if not isinstance(key, str | int):
                    raise YamlProblem(
                        _mark(self.file, key_node.start_mark), "mapping keys must be plain names"
                    )
                if key in out:
                    first = self.marks[(*path, key)].key
                    raise YamlProblem(
                        _mark(self.file, key_node.start_mark),
                        f"duplicate key {key!r} (first at line {first.line if first else '?'})",
                    )
                out[key] = self.build(
                    value_node, (*path, key), _mark(self.file, key_node.start_mark)
                )
            return out
        if isinstance(node, yaml.SequenceNode):
            return [self.build(item, (*path, i)) for i, item in enumerate(node.value)]
        return self._scalar(node, path)

    def _scalar(self, node: yaml.Node, path: PathKey) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise YamlProblem(_mark(self.file, node.start_mark), "mapping keys must be plain names")
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise YamlProblem(
                _mark(self.file, node.start_mark), f"invalid YAML value: {exc.problem}"
            ) from None
        except Exception as exc:  # noqa: BLE001 - whatever a constructor raises is the value's
            # PyYAML's constructors raise what they happen to for a value that does not fit its
            # (implicit or explicit) tag: ValueError for `2001-13-45`, an int beyond Python's
            # digit limit or `!!float x`, AttributeError for `!!timestamp x`, IndexError for
            # an empty `!!int`.
            raise YamlProblem(
                _mark(self.file, node.start_mark),
                f"invalid YAML value: {_a(node.tag.rpartition(':')[2])}{_why(exc)}",
                node.value,
                path,
            ) from None


def _a(tag: str) -> str:
    return f"not an {tag}" if tag[:1] in ("a", "e", "i", "o", "u") else f"not a {tag}"


def _why(exc: Exception) -> str:
    if "integer string conversion" in str(exc):
        return f" of at most {sys.get_int_max_str_digits()} digits"
    return f" ({exc})" if isinstance(exc, ValueError) and str(exc) else ""
