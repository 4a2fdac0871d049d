"""The config file's YAML, read with YAML 1.2 core-schema rules (pure: text in, values out).

PyYAML implements YAML 1.1, whose implicit typing surprises operators:
`asn: 065000` is octal (27136), `rd: 65000:10` is a base-60 number
(3900010), `description: no` is a boolean and `2026-01-01` a date. YAML 1.2's
core schema, which this loader keeps to, has only these plain scalars that
are not strings:

* null: `~`, `null`, `Null`, `NULL` and the empty value;
* booleans: `true`, `True`, `TRUE`, `false`, `False`, `FALSE`;
* integers: `[-+]?[0-9]+` in decimal (leading zeros included: `065000` is
  65000), `0o[0-7]+` and `0x[0-9a-fA-F]+`;
* floats: `1.5`, `-2e3`, `.inf`, `.nan` and their variants.

Everything else is a string: `65000:10`, `yes`, `on`, `1_000`, `2026-01-01`.
No new dependency: a SafeLoader subclass with its own resolvers and integer
constructor (ruamel.yaml would do the same at the cost of a C extension).

A mapping that names a key twice is not an error to YAML parsers (the last
one wins silently); `read` reports every such key with both lines. It also
maps each path of the document to the line it starts on, for error reports.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import yaml

Path = tuple[Any, ...]  # ("vnis", 0, "rd"): keys and list indices from the root

_NULL = re.compile(r"~|null|Null|NULL|")
_BOOL = re.compile(r"true|True|TRUE|false|False|FALSE")
_INT = re.compile(r"[-+]?[0-9]+|0o[0-7]+|0x[0-9a-fA-F]+")
_FLOAT = re.compile(
    r"[-+]?(?:\.[0-9]+|[0-9]+(?:\.[0-9]*)?)(?:[eE][-+]?[0-9]+)?"
    r"|[-+]?\.(?:inf|Inf|INF)|\.(?:nan|NaN|NAN)"
)


class Yaml12Loader(yaml.SafeLoader):
    """SafeLoader with the YAML 1.2 core schema's implicit types (see the module docstring)."""

    yaml_implicit_resolvers: dict[str | None, list[tuple[str, re.Pattern[str]]]] = {}

    def construct_yaml_int(self, node: yaml.Node) -> int:  # type: ignore[override]
        text = str(self.construct_scalar(node))  # type: ignore[arg-type]
        if text.startswith("0o"):
            return int(text[2:], 8)
        if text.startswith("0x"):
            return int(text[2:], 16)
        if not re.fullmatch(r"[-+]?[0-9]+", text):
            raise yaml.constructor.ConstructorError(
                None, None, f"{text!r} is not an integer (YAML 1.2: decimal, 0o or 0x)",
                node.start_mark,
            )
        return int(text, 10)  # leading zeros are decimal, not octal as in YAML 1.1


def _add(tag: str, pattern: re.Pattern[str], first: str) -> None:
    # `first`: the characters a match can start with (PyYAML indexes resolvers by them).
    for char in first:
        Yaml12Loader.yaml_implicit_resolvers.setdefault(char, []).append((tag, pattern))


def _install() -> None:
    # Fullmatch semantics: PyYAML calls `regexp.match`, so each pattern is anchored here.
    def whole(pattern: re.Pattern[str]) -> re.Pattern[str]:
        return re.compile(rf"^(?:{pattern.pattern})$")

    _add("tag:yaml.org,2002:null", whole(_NULL), "~nN")
    # The empty value: PyYAML looks its resolvers up under ''.
    Yaml12Loader.yaml_implicit_resolvers[""] = [("tag:yaml.org,2002:null", whole(_NULL))]
    _add("tag:yaml.org,2002:bool", whole(_BOOL), "tTfF")
    _add("tag:yaml.org,2002:int", whole(_INT), "-+0123456789")
    _add("tag:yaml.org,2002:float", whole(_FLOAT), "-+.0123456789")
    Yaml12Loader.add_constructor("tag:yaml.org,2002:int", Yaml12Loader.construct_yaml_int)


_install()


@dataclass(frozen=True, slots=True)
class DuplicateKey:
    """A key a mapping names twice: `path` ends with the key, `line` is the later one."""

    path: Path
    line: int
    first_line: int


@dataclass(frozen=True, slots=True)
class Document:
    data: Any
    lines: dict[Path, int]  # path -> the 1-based line it starts on
    duplicates: tuple[DuplicateKey, ...]


def read(text: str) -> Document:
    """Parse one YAML document; yaml.YAMLError on a syntax error."""
    loader = Yaml12Loader(text)
    try:
        node = loader.get_single_node()
        data = None if node is None else loader.construct_document(node)
    finally:
        loader.dispose()  # type: ignore[no-untyped-call]
    lines: dict[Path, int] = {}
    duplicates: list[DuplicateKey] = []
    if node is not None:
        _walk(node, (), lines, duplicates, set())
    return Document(data, lines, tuple(duplicates))


def _walk(node: yaml.Node, path: Path, lines: dict[Path, int],
          duplicates: list[DuplicateKey], walked: set[int]) -> None:
    lines.setdefault(path, node.start_mark.line + 1)
    if id(node) in walked:
        return  # an alias (*name) of a node walked already: nested aliases would cost 2^n
    walked.add(id(node))
    if isinstance(node, yaml.MappingNode):
        seen: dict[tuple[str, str], int] = {}
        for key, value in node.value:
            line = key.start_mark.line + 1
            if isinstance(key, yaml.ScalarNode):
                identity = (key.tag, key.value)
                if identity in seen:
                    duplicates.append(DuplicateKey((*path, key.value), line, seen[identity]))
                    continue  # the first one's lines stay in the map
                seen[identity] = line
            child = (*path, key.value)
            _walk(value, child, lines, duplicates, walked)
            lines[child] = line
    elif isinstance(node, yaml.SequenceNode):
        for index, item in enumerate(node.value):
            _walk(item, (*path, index), lines, duplicates, walked)
