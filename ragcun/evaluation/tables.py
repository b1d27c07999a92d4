"""Markdown tables, for the evaluation report and the model card alike."""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping, Sequence
from typing import Any


def fixed_cell(value: Any) -> str:
    """Floats to four decimals, everything else as ``str``: the evaluation report's cells."""
    return f"{value:.4f}" if isinstance(value, float) else str(value)


def markdown_table(
    rows: Sequence[Mapping[str, Any]],
    columns: Sequence[str | tuple[str, str]],
    *,
    cell: Callable[[Any], str] = fixed_cell,
    left_aligned: Collection[str] | None = None,
    bold_model: str | None = None,
) -> str:
    """One row per mapping; a column is a key (its own title) or a ``(key, title)`` pair.

    A key missing from a row is formatted as ``""``. ``left_aligned``: ``None`` leaves the alignment to the
    renderer (``---``); otherwise those keys align left (``:--``) and every other one right (``--:``), as numbers
    read best. ``bold_model``: the row whose ``model`` is this gets its first cell in bold.
    """
    pairs = [(column, column) if isinstance(column, str) else column for column in columns]
    rule = ["---" if left_aligned is None else (":--" if key in left_aligned else "--:") for key, _ in pairs]
    lines = ["| " + " | ".join(title for _, title in pairs) + " |", "|" + "|".join(rule) + "|"]
    for row in rows:
        cells = [cell(row.get(key, "")) for key, _ in pairs]
        if bold_model is not None and row.get("model") == bold_model:
            cells[0] = f"**{cells[0]}**"
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)
