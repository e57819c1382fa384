"""Small display helpers shared by the notebooks. Not a lesson: nothing here speaks RPC.

* :func:`show_table`: rows as a table that renders as HTML in Jupyter and as aligned text
  elsewhere (and under nbval, which compares both renderings);
* :func:`hexdump`: bytes as offset, hex and ASCII columns;
* :func:`stage_diff`: what a later stage changed in a module, class or function, as a unified diff
  of the two sources (the notebooks show the delta, never a copy);
* :func:`show_mro`: a class's method resolution order, with the methods each class defines itself;
* :func:`cpu_seconds`: CPU time used by this process or by a child (a server under test).

Every output is deterministic for deterministic input, so notebook cells that use these helpers
can be checked by nbval.
"""

from __future__ import annotations

import difflib
import html
import inspect
import os
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from types import ModuleType
from typing import Any

__all__ = ["Table", "show_table", "hexdump", "stage_diff", "show_mro", "cpu_seconds"]


@dataclass(frozen=True)
class Table:
    """A table of text cells; Jupyter shows its HTML, ``print`` and ``repr`` its plain text.

    Attributes:
        headers: one title per column.
        rows: the cells, already turned into text.
        numeric: per column, whether it is right-aligned (every value was a number).
    """

    headers: tuple[str, ...]
    rows: tuple[tuple[str, ...], ...]
    numeric: tuple[bool, ...]

    def _repr_html_(self) -> str:
        def cell(tag: str, text: str, right: bool) -> str:
            align = "right" if right else "left"
            return f'<{tag} style="text-align:{align}">{html.escape(text)}</{tag}>'

        head = "".join(cell("th", h, r) for h, r in zip(self.headers, self.numeric))
        body = "".join(
            "<tr>" + "".join(cell("td", c, r) for c, r in zip(row, self.numeric)) + "</tr>"
            for row in self.rows
        )
        return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"

    def __str__(self) -> str:
        widths = [
            max([len(h), *(len(row[i]) for row in self.rows)])
            for i, h in enumerate(self.headers)
        ]

        def line(cells: Sequence[str]) -> str:
            parts = (
                c.rjust(w) if right else c.ljust(w)
                for c, w, right in zip(cells, widths, self.numeric)
            )
            return "  ".join(parts).rstrip()

        rule = "  ".join("-" * w for w in widths)
        return "\n".join([line(self.headers), rule, *(line(row) for row in self.rows)])

    def __repr__(self) -> str:
        return str(self)


def show_table(rows: Iterable[Sequence[object]], headers: Sequence[str]) -> Table:
    """Build a :class:`Table`; make it the last expression of a cell to display it.

    Args:
        rows: one sequence of values per row, as many values as ``headers``. Values are shown
            with ``str``; floats with up to 4 significant digits.
        headers: the column titles.

    Returns:
        The table. Columns whose values are all numbers (``bool`` excluded) are right-aligned.

    Raises:
        ValueError: a row does not have one value per header.
    """
    materialised = [tuple(row) for row in rows]
    for row in materialised:
        if len(row) != len(headers):
            raise ValueError(f"row {row!r} has {len(row)} values for {len(headers)} headers")

    def is_number(value: object) -> bool:
        return isinstance(value, (int, float)) and not isinstance(value, bool)

    def text(value: object) -> str:
        return f"{value:.4g}" if isinstance(value, float) else str(value)

    numeric = tuple(
        bool(materialised) and all(is_number(row[i]) for row in materialised)
        for i in range(len(headers))
    )
    return Table(
        headers=tuple(str(h) for h in headers),
        rows=tuple(tuple(text(v) for v in row) for row in materialised),
        numeric=numeric,
    )


def hexdump(data: bytes, width: int = 16) -> str:
    """Render bytes the way ``hexdump -C`` does: offset, hex bytes, printable ASCII.

    Args:
        data: the bytes.
        width: bytes per line, ``>= 1``; a gap is left after each group of 8.

    Returns:
        One line per ``width`` bytes, e.g.
        ``0000  52 50 01 01 00 00 00 00  00 00 00 01 00 00 00 1a  |RP..............|``.
        Non-printable bytes show as ``.`` in the ASCII column. Empty input gives ``""``.

    Raises:
        ValueError: ``width < 1``.
    """
    if width < 1:
        raise ValueError(f"width must be >= 1, got {width}")
    digits = max(4, len(f"{max(len(data) - 1, 0):x}"))
    lines = []
    for offset in range(0, len(data), width):
        chunk = data[offset : offset + width]
        groups = [chunk[i : i + 8].hex(" ") for i in range(0, len(chunk), 8)]
        hex_part = "  ".join(groups)
        # Pad a short last line so its ASCII column lines up with the others.
        full = 3 * width - 1 + (width - 1) // 8  # one extra space between groups of 8
        ascii_part = "".join(chr(b) if 0x20 <= b < 0x7F else "." for b in chunk)
        lines.append(f"{offset:0{digits}x}  {hex_part.ljust(full)}  |{ascii_part}|")
    return "\n".join(lines)


Source = ModuleType | type | Callable[..., Any]
"""What :func:`stage_diff` compares: a module, a class or a function."""


def stage_diff(old: Source, new: Source, *, context: int = 3) -> str:
    """The unified diff from ``old``'s source to ``new``'s (modules, classes or functions).

    Use it to show what a stage changed: ``print(stage_diff(v1_0.client, v2_1.client))``.

    Args:
        old, new: modules, classes or functions (anything :func:`inspect.getsource` reads).
        context: unchanged lines shown around each change.

    Returns:
        The diff, headed ``--- old.name`` / ``+++ new.name``; ``""`` when the sources are equal.

    Raises:
        TypeError, OSError: as :func:`inspect.getsource`, when an object has no source.
    """
    return "".join(
        difflib.unified_diff(
            inspect.getsource(old).splitlines(keepends=True),
            inspect.getsource(new).splitlines(keepends=True),
            fromfile=_qualified_name(old),
            tofile=_qualified_name(new),
            n=context,
        )
    )


def show_mro(cls: type) -> str:
    """A class's method resolution order, one class per line, with what each defines itself.

    Returns:
        Lines such as ``Client  (stages.v1_0.client)  call, exchange`` from ``cls`` down to
        ``object``, indented one step per level; the names are the functions, properties and
        class/static methods found in that class's own ``__dict__``, sorted.
    """
    lines = []
    for depth, klass in enumerate(cls.__mro__):
        own = sorted(
            name
            for name, value in vars(klass).items()
            if inspect.isfunction(value) or isinstance(value, (property, classmethod, staticmethod))
        )
        where = f"{klass.__qualname__}  ({klass.__module__})"
        listed = f"  {', '.join(own)}" if own and klass is not object else ""
        lines.append(f"{'   ' * depth}{'└─ ' if depth else ''}{where}{listed}")
    return "\n".join(lines)


def cpu_seconds(pid: int | None = None) -> float:
    """CPU time (user + system, all threads) used so far by a process, in seconds.

    Take it before and after a run: the difference divided by the wall-clock time is how busy
    the process was (1.0 = one core all the time), divided by the calls it is the CPU per call.

    Args:
        pid: a process id; ``None`` means this process.

    Returns:
        Seconds of CPU time.

    Raises:
        OSError: ``pid`` is given and ``/proc/<pid>/stat`` cannot be read (the process is gone,
            or the system is not Linux).
    """
    if pid is None:
        return time.process_time()
    with open(f"/proc/{pid}/stat", encoding="ascii") as f:
        # The command name (field 2) may contain spaces, so split after its closing parenthesis;
        # then utime and stime (fields 14 and 15) are at positions 11 and 12.
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _qualified_name(obj: object) -> str:
    module = getattr(obj, "__module__", None)
    name = getattr(obj, "__qualname__", None) or getattr(obj, "__name__", repr(obj))
    # A module has no __module__ of its own; its __name__ is already qualified.
    return f"{module}.{name}" if module and not inspect.ismodule(obj) else str(name)
