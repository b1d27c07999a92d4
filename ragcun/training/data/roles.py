"""The three roles a training column can play, and the column names recognised for each.

Shared by validation (a ``columns=`` mapping names roles), TSV header detection and normalisation,
so that one list decides what ``query`` or ``neg_2`` means everywhere.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Sequence

ROLES: tuple[str, ...] = ("anchor", "positive", "negative")

ANCHOR_NAMES: tuple[str, ...] = ("query", "anchor", "question")
POSITIVE_NAMES: tuple[str, ...] = ("pos", "positive", "document", "passage", "answer")
# neg, negative, hard_negative, neg_1, negative2, negatives (a list column), hard_negatives, ...
_NEGATIVE_RE = re.compile(r"^(neg|negative|hard_negative)s?(_?\d+)?$")
RECOGNISED = (
    f"anchor: {', '.join(ANCHOR_NAMES)}; positive: {', '.join(POSITIVE_NAMES)}; negatives: neg, negative, "
    "hard_negative, neg_1, negative_2, ..., or a list column such as negatives"
)


def negative_columns(count: int) -> list[str]:
    """The names of ``count`` negative columns: ``negative``, ``negative_2``, ``negative_3``, ..."""
    return ["negative" if i == 0 else f"negative_{i + 1}" for i in range(count)]


def positional_names(count: int) -> list[str]:
    """Column names for headerless data, where position decides the role: anchor, positive, negatives."""
    return ["anchor", "positive", *negative_columns(max(count - 2, 0))][:count]


def role_of(column: str) -> str | None:
    """The role a column name is recognised as (case-insensitive), or None for columns to drop."""
    name = column.strip().lower()
    if name in ANCHOR_NAMES:
        return "anchor"
    if name in POSITIVE_NAMES:
        return "positive"
    if _NEGATIVE_RE.match(name):
        return "negative"
    return None


def closest(word: str, choices: Sequence[str]) -> str:
    """A ``(did you mean ...?)`` hint for a misspelt name, or an empty string."""
    match = difflib.get_close_matches(word, list(choices), n=1, cutoff=0.5)
    return f" (did you mean {match[0]!r}?)" if match else ""
