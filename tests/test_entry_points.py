"""The console scripts of pyproject.toml, the top-level train.py / evaluate.py and ``python -m ragcun.hub`` all
reach the same code, and each answers --help."""

from __future__ import annotations

import re
import subprocess
import sys
from importlib.metadata import entry_points

import pytest

from tests.helpers import REPO

SCRIPTS = {script.name: script for script in entry_points(group="console_scripts") if script.name.startswith("ragcun-")}


@pytest.mark.parametrize("name", ["ragcun-train", "ragcun-evaluate", "ragcun-hub"])
def test_each_console_script_target_answers_help(name: str, capsys) -> None:
    assert name in SCRIPTS, f"{name} is not installed as a console script"
    main = SCRIPTS[name].load()  # as installed: what the console script runs
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


@pytest.mark.slow
@pytest.mark.parametrize("command", [["train.py"], ["evaluate.py"], ["-m", "ragcun.hub"]])
def test_the_top_level_scripts_and_the_old_module_path_still_run(command: list[str]) -> None:
    result = subprocess.run([sys.executable, *command, "--help"], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    assert "usage:" in result.stdout


def test_every_subpackage_ships_in_the_wheel() -> None:
    """pyproject lists its packages by name (the card template folder is mapped in): a new one must be added."""
    listed = set(re.findall(r'"(ragcun[a-z_.]*)"', (REPO / "pyproject.toml").read_text().split("packages = [")[1].split("]")[0]))
    on_disk = {".".join(init.parent.relative_to(REPO).parts) for init in (REPO / "ragcun").rglob("__init__.py")}
    assert on_disk <= listed, sorted(on_disk - listed)


def test_evaluate_speaks_train_s_option_names_and_keeps_the_old_spellings() -> None:
    from ragcun.evaluation.cli import parse_args

    new = parse_args(["--model", "m", "--encode_precision", "bfloat16", "--embedding_cache_dir", "c",
                      "--max_seq_length", "128", "--output_dir", "o", "--frozen_base", "b", "--mteb_tasks", "SciFact"])
    old = parse_args(["--model", "m", "--precision", "bfloat16", "--cache-dir", "c", "--max-seq-length", "128",
                      "--output-dir", "o", "--frozen-base", "b", "--mteb-tasks", "SciFact"])
    assert vars(new) == vars(old)
    assert new.encode_precision == "bfloat16" and str(new.embedding_cache_dir) == "c" and new.max_seq_length == 128


def test_evaluate_reads_pinned_revisions_once_and_refuses_a_malformed_one(capsys) -> None:
    from ragcun.evaluation.cli import parse_args

    args = parse_args(["--model", "org/m", "--revision", "org/m=" + "a" * 40, "--revision", "org/base=v2"])
    assert args.revision == {"org/m": "a" * 40, "org/base": "v2"}
    with pytest.raises(SystemExit) as exit_info:
        parse_args(["--model", "org/m", "--revision", "org/m"])
    assert exit_info.value.code == 2 and "write HUB_ID=REVISION" in capsys.readouterr().err
