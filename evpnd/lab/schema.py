"""The containerlab JSON Schema, made usable by Python's `re`, and validation against it.

containerlab itself never validates against this schema (it is the editor
schema; its Go parser is authoritative), so passing it is necessary, not
sufficient: `topology.py` adds the checks the schema cannot express.
"""

from __future__ import annotations

import json
from functools import cache
from pathlib import Path
from typing import Any

# The upstream schema writes "a Unicode letter or digit" as [\p{N}\p{L}], which
# Python's `re` rejects; [^\W_] means the same thing. Applied to the JSON text.
_UNICODE_CLASS = r"[\\p{N}\\p{L}]"
_PYTHON_CLASS = r"[^\\W_]"

VENDORED = Path(__file__).with_name("clab.schema.json")
# The project's shared copy (an unmodified upstream file) sits next to the checkout.
SHARED = Path(__file__).resolve().parents[3] / "shared" / "containerlab" / "clab.schema.json"


class SchemaUnavailable(RuntimeError):
    """jsonschema is not installed or no schema file was found."""


def fix_patterns(schema_text: str) -> str:
    return schema_text.replace(_UNICODE_CLASS, _PYTHON_CLASS)


def schema_path() -> Path:
    """The shared upstream copy when present (the reference), else the vendored one."""
    for candidate in (SHARED, VENDORED):
        if candidate.is_file():
            return candidate
    raise SchemaUnavailable(f"containerlab schema not found at {SHARED} or {VENDORED}")


@cache
def load_schema(path: Path | None = None) -> dict[str, Any]:
    text = (path or schema_path()).read_text()
    schema: dict[str, Any] = json.loads(fix_patterns(text))
    return schema


def validate(data: Any, path: Path | None = None) -> list[str]:
    """Every schema violation as 'location: message', in document order; [] if valid."""
    try:
        import jsonschema  # a test/lab extra, not a daemon dependency
    except ImportError as exc:
        raise SchemaUnavailable("the Python package 'jsonschema' is not installed") from exc
    schema = load_schema(path)
    validator = jsonschema.Draft7Validator(schema)
    problems: list[str] = []
    for error in sorted(validator.iter_errors(data), key=lambda e: [str(p) for p in e.path]):
        where = ".".join(str(part) for part in error.absolute_path) or "<top>"
        problems.append(f"{where}: {_best_message(error)}")
    return problems


def _best_message(error: Any) -> str:
    # anyOf/oneOf failures say only "is not valid under any of the given schemas";
    # the deepest sub-error usually names the actual offending key.
    if error.context:
        deepest = max(error.context, key=lambda e: len(e.absolute_path))
        if len(deepest.absolute_path) > len(error.absolute_path):
            where = ".".join(str(p) for p in deepest.absolute_path)
            return f"{deepest.message} (at {where})"
    message: str = error.message
    return message
