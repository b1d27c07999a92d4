"""``ragcun.train`` and ``ragcun.train_head``: the command line's training, callable from a script or a notebook.

Both take what ``ragcun-train`` takes, as Python values: a recipe file and any recipe key as a keyword, keywords
overriding the file. They check every input before a model is loaded, exactly as the command line does, and return
the training summary (also written to ``output_dir/training_summary.json``).
"""

from __future__ import annotations

from os import PathLike
from typing import Any

from ragcun.training.recipe import load_recipe_file, parse_recipe
from ragcun.training.run import prepare_run, run_training

# The recommended method (docs/results.md): the base frozen as released, a head trained on its cached embeddings,
# starting from the head that ranks exactly as the base does.
HEAD_DEFAULTS: dict[str, Any] = {"train_head_only": True, "init": "scaled"}


def train(config: str | PathLike[str] | None = None, **options: Any) -> dict[str, Any]:
    """Train as ``ragcun-train --config CONFIG --key value ...`` does; returns the training summary.

    ``options`` are recipe keys (``python train.py --help`` lists them), e.g. ``output_dir="out"``, ``max_steps=100``,
    ``train_data=["pairs.jsonl"]``, ``resume_from_checkpoint=True``. An unknown key is refused with the closest
    valid name.
    """
    argv = ["--config", str(config)] if config is not None else []
    recipe = parse_recipe(argv, options)
    return run_training(recipe, prepare_run(recipe))


def train_head(config: str | PathLike[str] | None = None, **options: Any) -> dict[str, Any]:
    """Head-only training, the recommended path: the base stays frozen as released and a Dense head is trained on
    its embeddings, encoded once and cached (seconds to minutes on a CPU).

    The same as :func:`train` with ``train_head_only=True`` and, unless the recipe or ``options`` choose another,
    ``init="scaled"`` (step 0 ranks as the base's cosine). ``train_head_only=False`` is refused: use :func:`train`.
    """
    from_file = load_recipe_file(config) if config is not None else {}
    if options.get("train_head_only", from_file.get("train_head_only", True)) is False:
        raise ValueError("train_head trains a head on the frozen base, and the recipe or options set train_head_only "
                         "false: call ragcun.train to fine-tune the backbone.")
    defaults = {key: value for key, value in HEAD_DEFAULTS.items() if key not in options and key not in from_file}
    return train(config, **defaults, **options)
