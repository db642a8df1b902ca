"""Generate the client's typed methods (``univrs/client/methods.py``) from the operations table.

    python -m univrs.client.generate            # rewrite univrs/client/methods.py
    python -m univrs.client.generate --check    # exit 1 if it is out of date

Each operation of ``univrs.service.operations`` with a ``client`` name becomes one method:
its required arguments positional (in the declared order), the others keyword-only and left
out when None; reads take ``consistency``, and the writes that answer with their object
(``protocol.OBJECT_WRITES``) ``answer`` ("minimal": ``{"id", "version"}`` only). The methods
are written out, not made at import time, so they are typed, documented and visible to
readers and type checkers; a test fails when the file is out of date.
"""

from __future__ import annotations

import pathlib
import sys
from collections.abc import Sequence

from univrs.client.protocol import OBJECT_WRITES
from univrs.service.operations import OPERATIONS, Operation, Param

TARGET = pathlib.Path(__file__).with_name("methods.py")

_HEADER = '''"""The typed operations of the client: one method per operation of the table.

GENERATED from ``univrs/service/operations.py`` by ``python -m univrs.client.generate``: do not
edit by hand (tests/test_operations.py fails when this file is out of date).

Each method builds the operation's arguments (leaving out optional ones not given) and runs it
with ``call`` (reads, optionally ``consistency="local"``) or ``write`` (exactly once, with an
idempotency key). Results are the documents of ``docs/api.md``: plain dicts.
"""

from __future__ import annotations

from typing import Any, Protocol


class _Runner(Protocol):
    """What the methods need from the client class (``univrs.client.client.Client``)."""

    async def call(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        key: tuple[str, int] | None = None,
        consistency: str | None = None,
        timeout: float | None = None,
        retry: bool | None = None,
    ) -> Any: ...

    async def write(
        self,
        op: str,
        args: dict[str, Any] | None = None,
        *,
        timeout: float | None = None,
        answer: str | None = None,
    ) -> Any: ...


def _args(given: dict[str, Any], **optional: Any) -> dict[str, Any]:
    """The required arguments and the optional ones that are not None."""
    return {**given, **{k: v for k, v in optional.items() if v is not None}}


class StateMethods:
    """One method per operation, on top of the client's ``call`` and ``write``."""
'''


def _annotation(p: Param) -> str:
    return p.type.value if p.required else f"{p.type.value} | None = None"


def _signature(op: Operation) -> list[str]:
    required = [p for p in op.params if p.required]
    optional = [p for p in op.params if not p.required]
    parts = ["self: _Runner", *(f"{p.name}: {_annotation(p)}" for p in required)]
    keywords = [f"{p.name}: {_annotation(p)}" for p in optional]
    if not op.is_write:
        keywords.append("consistency: str | None = None")
    elif op.name in OBJECT_WRITES:
        keywords.append("answer: str | None = None")
    if keywords:
        parts += ["*", *keywords]
    return parts


def _body(op: Operation) -> list[str]:
    # The map written out (the given ones, then each optional one that is not None), not a
    # call to ``_args`` with keywords: about 1 µs less per call (s19-client).
    given = ", ".join(f'"{p.name}": {p.name}' for p in op.params if p.required)
    lines = [f"args: dict[str, Any] = {{{given}}}"]
    for p in op.params:
        if not p.required:
            lines += [f"if {p.name} is not None:", f'    args["{p.name}"] = {p.name}']
    if op.name in OBJECT_WRITES:
        lines.append(f'return await self.write("{op.name}", args, answer=answer)')
    elif op.is_write:
        lines.append(f'return await self.write("{op.name}", args)')
    else:
        lines.append(f'return await self.call("{op.name}", args, consistency=consistency)')
    return lines


def _docstring(op: Operation) -> str:
    text = f"{op.summary}."
    if op.paged:
        text += (
            ' A page ``{"items": [...], "next": key | None}``: pass ``next`` as ``after`` '
            "for the following one."
        )
    if op.name in OBJECT_WRITES:
        text += (
            ' ``answer="minimal"``: only ``{"id", "version"}`` (the version this write gave '
            "it; default: the client's ``answer``)."
        )
    return text


def _wrap(words: str, indent: str, width: int = 100) -> list[str]:
    lines: list[str] = []
    line = ""
    for word in words.split(" "):
        candidate = f"{line} {word}" if line else word
        if line and len(indent) + len(candidate) > width:
            lines.append(indent + line)
            line = word
        else:
            line = candidate
    lines.append(indent + line)
    return lines


def _method(op: Operation) -> str:
    # Always one parameter and one argument a line (with trailing commas), so that the
    # output is what ruff format makes of it, whatever the lengths.
    assert op.client is not None
    head = [
        f"    async def {op.client}(",
        *(f"        {p}," for p in _signature(op)),
        "    ) -> Any:",
    ]
    doc = _wrap(f'"""{_docstring(op)}"""', " " * 8)
    return "\n".join([*head, *doc, *(f"        {line}" for line in _body(op))])


def render() -> str:
    """The text of ``univrs/client/methods.py`` for the current table."""
    methods = [_method(op) for op in OPERATIONS.values() if op.client is not None]
    return _HEADER + "\n" + "\n\n".join(methods) + "\n"


def main(argv: Sequence[str] | None = None) -> int:
    """Write (or with ``--check`` compare) the file; returns the exit status."""
    args = sys.argv[1:] if argv is None else list(argv)
    text = render()
    if args == ["--check"]:
        if TARGET.read_text() != text:
            print(f"{TARGET} is out of date: run python -m univrs.client.generate")
            return 1
        return 0
    if args:
        print("usage: python -m univrs.client.generate [--check]")
        return 2
    TARGET.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
