"""YAML that remembers where every key and value came from.

PyYAML's composer gives nodes with marks; we construct plain Python data from them ourselves so
that each path (`("devices", 0, "port")`) keeps the file, line and column of its key and its
value. That is what lets configuration errors say `line.yaml:14:11: devices[0].port: ...`.
Duplicate keys are an error here (PyYAML silently keeps the last one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

PathKey = tuple[str | int, ...]


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

    def __init__(self, mark: Mark, problem: str, got: str | None = None) -> None:
        super().__init__(f"{mark}: {problem}")
        self.mark = mark
        self.problem = problem
        self.got = got


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
    text = path.read_text(encoding="utf-8")
    return loads(text, file)


def loads(text: str, file: str) -> Located:
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        problem = exc.problem or exc.context or "cannot parse"
        raise YamlProblem(_mark(file, mark), f"invalid YAML: {problem}") from None
    except yaml.YAMLError as exc:  # e.g. reader errors (control characters) carry no mark
        raise YamlProblem(Mark(file, 1, 1), f"invalid YAML: {exc}") from None
    if not nodes or nodes[0] is None:
        raise YamlProblem(Mark(file, 1, 1), "the file is empty")
    if len(nodes) > 1:
        raise YamlProblem(
            _mark(file, nodes[1].start_mark), "more than one YAML document in the file"
        )
    marks: dict[PathKey, Where] = {}
    builder = _Builder(file, marks)
    data = builder.build(nodes[0], ())
    return Located(data, marks)


class _Builder:
    def __init__(self, file: str, marks: dict[PathKey, Where]) -> None:
        self.file = file
        self.marks = marks
        self.constructor = yaml.SafeLoader("")  # its constructor turns scalar nodes into values

    def build(self, node: yaml.Node, path: PathKey, key_mark: Mark | None = None) -> Any:
        self.marks[path] = Where(key_mark, _mark(self.file, node.start_mark))
        if isinstance(node, yaml.MappingNode):
            # `<<` merge keys: let PyYAML flatten them first, as its own constructor would.
            self.constructor.flatten_mapping(node)
            out: dict[Any, Any] = {}
            for key_node, value_node in node.value:
                key = self._scalar(key_node)
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
        return self._scalar(node)

    def _scalar(self, node: yaml.Node) -> Any:
        if not isinstance(node, yaml.ScalarNode):
            raise YamlProblem(_mark(self.file, node.start_mark), "mapping keys must be plain names")
        try:
            return self.constructor.construct_object(node, deep=True)
        except yaml.constructor.ConstructorError as exc:
            raise YamlProblem(
                _mark(self.file, node.start_mark), f"invalid YAML value: {exc.problem}"
            ) from None
