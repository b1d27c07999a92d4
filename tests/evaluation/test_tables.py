"""The one markdown table writer, in the evaluation report's style and the model card's."""

from __future__ import annotations

from ragcun.evaluation import reports
from ragcun.evaluation.tables import markdown_table
from ragcun.isotropy import ISOTROPY_FIGURES
from ragcun.release import model_card

ROWS = [{"model": "m/a", "dataset": "d", "mean_norm": 0.123456, "sigreg": None, "effective_rank": 1234.5,
         "is_isotropic": True},
        {"model": "m/b", "dataset": "e", "mean_norm": 3, "sigreg": float("nan")}]


def test_report_style() -> None:
    assert markdown_table(ROWS, ["model", "mean_norm", "sigreg", "is_isotropic"]) == "\n".join([
        "| model | mean_norm | sigreg | is_isotropic |",
        "|---|---|---|---|",
        "| m/a | 0.1235 | None | True |",
        "| m/b | 3 | nan |  |",  # a missing key is an empty cell
    ])


def test_card_style() -> None:
    columns = [("model", "model"), ("dataset", "dataset"), ("mean_norm", "‖mean‖"), ("effective_rank", "eff. rank"),
               ("sigreg", "SIGReg")]
    assert model_card.markdown_table(ROWS, columns, "m/a") == "\n".join([
        "| model | dataset | ‖mean‖ | eff. rank | SIGReg |",
        "|:--|:--|--:|--:|--:|",
        "| **m/a** | d | 0.1235 | 1.23e+03 | – |",
        "| m/b | e | 3.0000 | – | – |",
    ])


def test_isotropy_columns_are_figures_of_the_report() -> None:
    """The card reads the report's csv back, and the report's table reads its own rows: every isotropy column
    must be one the report writes."""
    assert set(reports.ISOTROPY_COLUMNS) <= set(ISOTROPY_FIGURES)
    assert set(reports.ISOTROPY_TABLE) <= set(reports.ISOTROPY_COLUMNS)
    card = [key for key, _ in model_card.ISOTROPY_COLUMNS if key not in ("model", "dataset", "view")]
    assert set(card) <= set(reports.ISOTROPY_COLUMNS)
