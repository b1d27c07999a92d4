"""The notebooks run headless on the tiny model and tiny data (papermill injects the parameters), and the GPU
recipe they train with is valid: parsed and run for two steps on the tiny model."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.helpers import REPO, TRIPLETS, write_topic_beir

NOTEBOOKS = REPO / "notebooks"
GPU_RECIPE = REPO / "recipes" / "embeddinggemma-gpu.yaml"
# The GPU recipe shrunk to the tiny model and a few seconds: a 32-d base, a 16-d head, 160 rows, 2 steps.
TINY_OVERRIDES = {
    "tiny_base": True, "tiny_hidden_size": 32, "tiny_num_layers": 2, "output_dim": 16, "num_slices": 64,
    "train_data": [str(TRIPLETS)], "max_samples": 160, "eval_size": 32, "per_device_train_batch_size": 16,
    "per_device_eval_batch_size": 32, "max_steps": 2, "logging_steps": 1, "eval_steps": 1, "save_steps": 1,
    "disable_tqdm": True,
}


def execute(name: str, tmp_path: Path, **parameters: object) -> None:
    """Run a notebook from its own folder, as Jupyter does; any cell error fails the test."""
    papermill = pytest.importorskip("papermill", reason="the notebooks extra: pip install -e '.[notebooks]'")
    papermill.execute_notebook(str(NOTEBOOKS / name), str(tmp_path / name), parameters=parameters,
                               cwd=str(NOTEBOOKS), kernel_name="python3", progress_bar=False, execution_timeout=300)


@pytest.mark.slow
def test_training_notebook_trains_the_gpu_recipe_on_the_tiny_model(tmp_path: Path) -> None:
    run = tmp_path / "run"
    execute("lejepa_training.ipynb", tmp_path, output_dir=str(run), device="cpu", overrides=TINY_OVERRIDES)
    summary = json.loads((run / "training_summary.json").read_text())
    assert summary["global_step"] == 2
    assert (run / "final" / "modules.json").is_file()
    assert (run / "final.zip").is_file()  # no push_to: the model is zipped for download


@pytest.mark.slow
def test_isotropy_notebook_writes_the_comparison(tmp_path: Path, two_models: tuple[str, str]) -> None:
    tuned, base = two_models
    out = tmp_path / "processed"
    execute("evaluate_isotropy.ipynb", tmp_path, original_model=base, tuned_model=tuned, output_dir=str(out),
            heldout_data=[str(TRIPLETS)], max_samples=160, eval_size=32, device="cpu", max_seq_length=64)
    rows = (out / "isotropy_comparison.csv").read_text().splitlines()
    assert rows[0].startswith("model,dataset,view")
    assert len(rows) == 1 + 2 * 2  # two models, raw and corpus-standardized
    assert (out / "isotropy_comparison.png").stat().st_size > 0


@pytest.mark.slow
def test_rag_notebook_writes_the_comparison_and_answers(tmp_path: Path, two_models: tuple[str, str]) -> None:
    tuned, base = two_models
    beir = write_topic_beir(tmp_path / "topics")
    out = tmp_path / "processed"
    execute("evaluate_rag.ipynb", tmp_path, original_model=base, tuned_model=tuned, data=str(beir),
            data_url="", output_dir=str(out), cache_dir=str(tmp_path / "cache"), device="cpu", max_seq_length=64,
            questions=["what about music fact 0"], retriever_documents=100)
    for report in ("rag_performance_comparison.csv", "rag_performance.png", "reliability.png"):
        assert (out / report).stat().st_size > 0
    nbformat = pytest.importorskip("nbformat")
    answered = nbformat.read(tmp_path / "evaluate_rag.ipynb", as_version=4).cells[-1].outputs
    assert "distance" in "".join(output.get("text", "") for output in answered)  # the retriever's hits, printed


def test_committed_notebooks_carry_no_outputs() -> None:
    """Outputs and execution counts stay out of the repository: they are large, and they change on every run."""
    names = sorted(path.name for path in NOTEBOOKS.glob("*.ipynb"))
    assert names == ["evaluate_isotropy.ipynb", "evaluate_rag.ipynb", "lejepa_training.ipynb"]
    for name in names:
        cells = json.loads((NOTEBOOKS / name).read_text())["cells"]
        assert cells[2]["metadata"].get("tags") == ["parameters"], f"{name}: the parameters cell comes first"
        for cell in cells:
            if cell["cell_type"] == "code":
                assert cell["outputs"] == [] and cell["execution_count"] is None, f"{name}: strip the outputs"


def test_notebook_gpu_recipe_runs_two_steps_on_the_tiny_model(tmp_path: Path) -> None:
    from ragcun import train_head
    from ragcun.training.recipe import parse_recipe

    from ragcun.training.data import validate_sources

    recipe = parse_recipe(["--config", str(GPU_RECIPE)])
    assert recipe.model.train_head_only and recipe.loss.lambda_isotropy == 0.1 and recipe.loss.num_principal == 0
    # its own data entry, as far as it can be checked offline: a Hub dataset id, its config and split
    (source,) = validate_sources(recipe.data.train_data)
    assert (source.path, source.config_name, source.split) == ("sentence-transformers/msmarco-bm25", "triplet", "train")
    summary = train_head(GPU_RECIPE, **TINY_OVERRIDES, output_dir=str(tmp_path / "run"),
                         embedding_cache_dir=str(tmp_path / "cache"))
    assert summary["global_step"] == 2
    assert (tmp_path / "run" / "final" / "modules.json").is_file()
