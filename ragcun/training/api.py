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

# The recommended method (docs/results.md, recipes/embeddinggemma-head-mixed.yaml): the base frozen as released, a head
# trained on its cached embeddings, starting from the head that ranks exactly as the base does, with random-slice
# SIGReg at λ 0.1 on batches of 256 distinct texts. The head's weights are about √D times its unit-norm inputs while
# Adam's steps are about the learning rate per weight, hence 2e-2.
HEAD_DEFAULTS: dict[str, Any] = {
    "train_head_only": True, "init": "scaled", "lambda_isotropy": 0.1, "num_principal": 0,
    "per_device_train_batch_size": 256, "learning_rate": 2e-2, "weight_decay": 0.0, "batch_sampler": "no_duplicates",
}


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

    The same as :func:`train` with ``train_head_only=True`` and, where the recipe and ``options`` are silent, the
    recommended settings of :data:`HEAD_DEFAULTS` (``init="scaled"``: step 0 ranks as the base's cosine; SIGReg λ 0.1,
    random slices; batch 256, lr 2e-2). ``train_head_only=False`` is refused: use :func:`train`.
    """
    return train(config, **head_options(config, options))


def head_options(config: str | PathLike[str] | None, options: dict[str, Any]) -> dict[str, Any]:
    """``options`` with :data:`HEAD_DEFAULTS` filled in where neither they nor the recipe file set a key."""
    from_file = load_recipe_file(config) if config is not None else {}
    if options.get("train_head_only", from_file.get("train_head_only", True)) is False:
        raise ValueError("train_head trains a head on the frozen base, and the recipe or options set train_head_only "
                         "false: call ragcun.train to fine-tune the backbone.")
    defaults = {key: value for key, value in HEAD_DEFAULTS.items() if key not in options and key not in from_file}
    return {**defaults, **options}
