"""Markdown tables of the benchmark results: number formatting, tables, and why a row has no figures."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

Row = tuple[str, Sequence[Any]]


def fmt(value: Any, digits: int = 3) -> str:
    """A figure for a table: ``n/a`` for None, thousands separators, about ``digits`` significant digits."""
    if value is None:
        return "n/a"
    if isinstance(value, str):
        return value
    if isinstance(value, int) and not isinstance(value, bool):
        return f"{value:,}"
    if value == 0:
        return "0"
    if abs(value) >= 100:
        return f"{value:,.0f}"
    if abs(value) >= 1:
        return f"{value:.{digits}g}" if abs(value) < 10 else f"{value:.1f}"
    return f"{value:.{digits}g}"


def markdown_table(columns: list[str], rows: list[Row]) -> str:
    """``rows`` are ``(name, [cells])``; cells are formatted with `fmt`."""
    head = "| " + " | ".join(["", *columns]) + " |"
    rule = "|:--" + "".join("|--:" for _ in columns) + "|"
    body = ["| " + " | ".join([name] + [fmt(c) for c in cells]) + " |" for name, cells in rows]
    return "\n".join([head, rule, *body])


def why(result: dict[str, Any]) -> str | None:
    """``"skipped"`` or ``"error"`` when a worker result holds no figures, else None."""
    if "skipped" in result:
        return "skipped"
    if "error" in result:
        return "error"
    return None
