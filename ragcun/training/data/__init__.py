"""Training data: local files, BEIR folders and Hub datasets, mixed into one ``datasets.Dataset``.

sentence-transformers feeds columns to the loss by position, not by name, so the result has exactly
the columns ``anchor``, ``positive``, then zero or more ``negative``, ``negative_2``, ... (all
strings), in that order, and nothing else: ids, scores and labels are dropped, because a ``label``
column would be passed to the loss as a target. (``ragcun.evaluation.beir`` reads BEIR folders for
*evaluation*; this package reads data for *training*.)

Every check that needs no loading is done up front (``validate_sources``), so a training script
can fail in a second on a typo instead of after loading a model.

- ``roles``: the roles anchor / positive / negative and the column names recognised for them;
- ``sources``: what a source is, and the checks that need no loading;
- ``reading``: data files to rows, through ``datasets.load_dataset``;
- ``loaders``: Hub ids, save_to_disk and BEIR folders;
- ``columns``: column roles, and normalisation to text columns;
- ``mixing``: concatenation, shuffling, the held-out split by anchor, negatives padding.

Log records go to child loggers of ``ragcun.training.data``.
"""

from __future__ import annotations

from ragcun.training.data.mixing import load_training_data
from ragcun.training.data.roles import ROLES, negative_columns
from ragcun.training.data.sources import FORMATS, DataSource, validate_sources

__all__ = ["DataSource", "load_training_data", "validate_sources", "negative_columns", "ROLES", "FORMATS"]
