"""``ragcun-train`` / ``python train.py``: fine-tune an embedder to N(0, I) with LeJEPA (Euclidean MNRL + SIGReg).

    ragcun-train --config recipes/quickstart.yaml [--any_option value ...]
    accelerate launch --num_processes 2 train.py --config recipes/quickstart.yaml

Every SentenceTransformerTrainingArguments field and every ragcun option is a recipe key and a flag;
``ragcun-train --help`` lists them all.
"""

from __future__ import annotations

import sys
from pathlib import Path

from ragcun.training.recipe import parse_recipe
from ragcun.training.run import prepare_run, run_training


def main(argv: list[str] | None = None) -> None:
    try:
        recipe = parse_recipe(argv)
        prepared = prepare_run(recipe)  # every input check, before any model is loaded
    except (ValueError, FileNotFoundError) as error:
        sys.exit(f"{Path(sys.argv[0]).name}: error: {error}")
    run_training(recipe, prepared)
