"""Release a trained ragcun model: build the repository folder (model + card + recipe + reports) and push it.

::

    python -m ragcun.release.hub release output/run/final org/ragcun-gemma --eval-dir eval/ --output release/
    python -m ragcun.release.hub push    output/run/final org/ragcun-gemma --eval-dir eval/ [--private] [--revision B] [--create-pr]

``release`` only writes the folder, so the card can be read before anything is uploaded; ``push`` builds
the same folder in a temporary directory and uploads it with ``huggingface_hub.HfApi.upload_folder``. The
released folder is a plain sentence-transformers model: ``SentenceTransformer("org/ragcun-gemma")`` needs
no ragcun. The user's model folder is never modified.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from huggingface_hub import HfApi
from huggingface_hub.errors import HFValidationError
from huggingface_hub.utils import validate_repo_id

from ragcun.io import atomic_write_text, write_folder_atomically
from ragcun.release.model_card import CardOptions, render_model_card

RUN_FILES = ("recipe.yaml", "training_summary.json")
REPORT_SUFFIXES = (".csv", ".md", ".png", ".json")
MODEL_MARKERS = ("modules.json", "config_sentence_transformers.json")
SKIPPED_IN_MODEL_DIR = {"README.md", "runs"}  # card is re-rendered; training leftovers stay home


def check_repo_id(repo_id: str) -> str:
    """A Hub model id in the form ``org/name``."""
    try:
        validate_repo_id(repo_id)
    except HFValidationError as error:
        raise ValueError(f"Invalid repository id {repo_id!r}: {error} Use the form 'org/name', "
                         "e.g. 'my-org/ragcun-gemma'.") from None
    if repo_id.count("/") != 1:
        raise ValueError(f"Invalid repository id {repo_id!r}: give the owner too, as 'org/name' "
                         "(e.g. 'my-org/ragcun-gemma').")
    return repo_id


def resolve_model_dir(path: str | Path) -> Path:
    """The sentence-transformers folder to release: ``path`` itself, or the ``final/`` a train.py run wrote."""
    path = Path(path).expanduser()
    if not path.is_dir():
        raise ValueError(f"Model folder {path} does not exist. Pass the folder train.py wrote "
                         "(output_dir or output_dir/final) or one saved with model.save(path).")
    for candidate in (path, path / "final"):
        if all((candidate / marker).is_file() for marker in MODEL_MARKERS):
            return candidate
    missing = [marker for marker in MODEL_MARKERS if not (path / marker).is_file()]
    raise ValueError(f"{path} is not a sentence-transformers model folder ({', '.join(missing)} missing). "
                     "Pass the folder train.py wrote (output_dir or output_dir/final) or one saved with "
                     "SentenceTransformer.save(path).")


def _copy_model(model_dir: Path, target: Path) -> None:
    for item in model_dir.iterdir():
        if item.name in SKIPPED_IN_MODEL_DIR or item.name.startswith(("checkpoint-", ".")):
            continue
        if item.is_dir():
            shutil.copytree(item, target / item.name)
        else:
            shutil.copy2(item, target / item.name)


def _copy_reports(eval_dir: Path, target: Path) -> None:
    """The evaluate.py outputs the card links to (tables, figures, mteb results), never its embedding cache."""
    for item in sorted(eval_dir.rglob("*")):
        relative = item.relative_to(eval_dir)
        if item.is_file() and item.suffix in REPORT_SUFFIXES and not any(p.startswith(".") for p in relative.parts):
            destination = target / relative
            destination.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(item, destination)


@dataclass
class Release:
    folder: Path
    card: str


def build_release(model_dir: str | Path, options: CardOptions, output_dir: str | Path) -> Release:
    """Write the repository folder: the model files, README.md (the card), the run's recipe and summary,
    and the evaluation reports under ``evaluation/``. Built beside ``output_dir`` and renamed into place."""
    options.repo_id = check_repo_id(options.repo_id)
    model_dir = resolve_model_dir(model_dir)
    output_dir = Path(output_dir).expanduser().resolve()
    if output_dir.exists() and any(output_dir.iterdir()):
        raise ValueError(f"Release folder {output_dir} is not empty. Choose a new --output folder.")
    if model_dir.resolve() == output_dir or output_dir in model_dir.resolve().parents:
        raise ValueError(f"Release folder {output_dir} would overwrite the model itself. Choose another --output.")
    card = render_model_card(model_dir, options)  # fails on bad reports before anything is written

    def fill(staging: Path) -> None:
        _copy_model(model_dir, staging)
        for folder in (model_dir, model_dir.parent):
            for name in RUN_FILES:
                if (folder / name).is_file() and not (staging / name).exists():
                    shutil.copy2(folder / name, staging / name)
        if options.eval_dir:
            _copy_reports(Path(options.eval_dir), staging / "evaluation")
        atomic_write_text(staging / "README.md", card)

    write_folder_atomically(output_dir, fill)
    return Release(output_dir, card)


def push(model_dir: str | Path, options: CardOptions, private: bool = False, revision: str | None = None,
         create_pr: bool = False, token: str | None = None, api: Any = None,
         commit_message: str = "Upload ragcun model") -> Any:
    """Build the release in a temporary folder and upload it. ``api`` defaults to ``HfApi(token=token)``;
    anything with ``create_repo`` / ``create_branch`` / ``upload_folder`` of the same signature works."""
    api = api or HfApi(token=token)
    with tempfile.TemporaryDirectory(prefix="ragcun-release-") as tmp:
        release = build_release(model_dir, options, Path(tmp) / "repo")
        api.create_repo(repo_id=options.repo_id, repo_type="model", private=private, exist_ok=True)
        if revision and revision != "main" and not create_pr:
            api.create_branch(repo_id=options.repo_id, branch=revision, repo_type="model", exist_ok=True)
        return api.upload_folder(repo_id=options.repo_id, repo_type="model", folder_path=str(release.folder),
                                 revision=revision, create_pr=create_pr, commit_message=commit_message)


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="ragcun-hub", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    for name, help_text in (("release", "write the repository folder locally (read the card before pushing)"),
                            ("push", "build the repository folder and upload it to the Hub")):
        command = commands.add_parser(name, help=help_text)
        command.add_argument("model_dir", help="the trained model (train.py's output_dir or output_dir/final)")
        command.add_argument("repo_id", help="Hub id, org/name")
        command.add_argument("--eval-dir", help="evaluate.py --output-dir with this model's reports")
        command.add_argument("--eval-name", help="the model's name in those reports (default: the first model)")
        command.add_argument("--base-model", help="Hub id of the base model, when the recipe used a local copy")
        command.add_argument("--license", help="licence id for the card, e.g. 'gemma' or 'apache-2.0'")
        command.add_argument("--language", nargs="*", default=[], help="language codes, e.g. en")
        command.add_argument("--dataset", nargs="*", default=[], help="Hub ids of training datasets")
        command.add_argument("--model-name", help="title of the card (default: the repository name)")
        if name == "release":
            command.add_argument("--output", required=True, help="new folder to write the release into")
        else:
            command.add_argument("--private", action="store_true", help="create the repository as private")
            command.add_argument("--revision", help="branch to push to (created if missing)")
            command.add_argument("--create-pr", action="store_true", help="open a pull request instead of committing")
            command.add_argument("--token", help="Hub token (default: the logged-in token / HF_TOKEN)")
    return parser


def main(argv: list[str] | None = None, api: Any = None) -> int:
    args = _parser().parse_args(argv)
    options = CardOptions(repo_id=args.repo_id, base_model=args.base_model, license=args.license,
                          language=args.language, datasets=args.dataset, model_name=args.model_name,
                          eval_dir=args.eval_dir, eval_name=args.eval_name)
    try:
        if args.command == "release":
            release = build_release(args.model_dir, options, args.output)
            print(f"Release written to {release.folder} (card: {release.folder / 'README.md'}).")
        else:
            result = push(args.model_dir, options, private=args.private, revision=args.revision,
                          create_pr=args.create_pr, token=args.token, api=api)
            print(f"Pushed to https://huggingface.co/{options.repo_id}: {result}")
    except ValueError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
