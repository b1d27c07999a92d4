"""benchmarks/heldout_selection.py (the selection rule) and benchmarks/top_layers_speed.py (its rates, on a tiny model)."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
SPEC = importlib.util.spec_from_file_location("heldout_selection", REPO / "benchmarks" / "heldout_selection.py")
heldout_selection = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(heldout_selection)


def _figures(mrr: float, isotropic: bool) -> dict[str, float]:
    return {"heldout_mrr@10": mrr, "heldout_is_isotropic": float(isotropic)}


def test_the_rule_picks_the_best_isotropic_system_and_breaks_ties_by_order() -> None:
    systems = {"base": _figures(0.90, False), "whitened": _figures(0.70, True), "top": _figures(0.75, True)}
    assert heldout_selection.pick(systems, tie=0.002) == "top"  # the non-isotropic base never qualifies
    systems["top"] = _figures(0.701, True)
    assert heldout_selection.pick(systems, tie=0.002) == "whitened"  # within the tie: the one listed first
    assert heldout_selection.pick({"base": _figures(0.9, False)}, tie=0.002) is None


def test_figures_are_read_from_a_summary_or_a_metrics_file(tmp_path: Path) -> None:
    summary = tmp_path / "training_summary.json"
    summary.write_text(json.dumps({"isotropy_after": _figures(0.5, True), "base_metrics": _figures(0.6, False)}))
    assert heldout_selection.heldout_figures(str(summary)) == _figures(0.5, True)
    assert heldout_selection.heldout_figures(f"{summary}:base_metrics") == _figures(0.6, False)
    metrics = tmp_path / "heldout_metrics.json"
    metrics.write_text(json.dumps(_figures(0.4, True)))
    assert heldout_selection.heldout_figures(str(metrics)) == _figures(0.4, True)


@pytest.mark.slow
def test_the_speed_benchmark_prints_the_three_rates(tiny_base_dir: Path, tmp_path: Path) -> None:
    data = tmp_path / "pairs.jsonl"
    data.write_text("".join(json.dumps({"query": f"q {i}", "pos": f"planets orbit the sun note {i}"}) + "\n"
                            for i in range(24)))
    result = subprocess.run([sys.executable, str(REPO / "benchmarks" / "top_layers_speed.py"), "--model",
                             str(tiny_base_dir), "--k", "1", "--texts", "24", "--batch-size", "8", "--data", str(data)],
                            capture_output=True, text=True, timeout=300, cwd=REPO)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "k=1 of 2 layers  24 passages" in result.stdout
    assert "encode (all layers" in result.stdout and "x encoding" in result.stdout
    lowest = float(result.stdout.split("lowest cosine")[1].split()[0])
    assert lowest > 0.99999  # float32 states: the cached top is the full model
