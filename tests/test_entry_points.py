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


def test_the_console_scripts_are_the_three_commands() -> None:
    assert set(SCRIPTS) == {"ragcun-train", "ragcun-evaluate", "ragcun-hub"}


@pytest.mark.parametrize("name", sorted(SCRIPTS))
def test_each_console_script_target_answers_help(name: str, capsys) -> None:
    main = SCRIPTS[name].load()  # as installed: what the console script runs
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    assert "usage:" in capsys.readouterr().out


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
