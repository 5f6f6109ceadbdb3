"""``skcgcnn tune``: search CGCNN hyper-parameters with Optuna.

The parser and the run are :func:`skcgcnn.tuning.add_tune_parser` and
:func:`skcgcnn.tuning.run_tune_command`; this module is where the command line finds
them, and is imported only when ``skcgcnn tune`` runs (it imports torch and optuna).
"""
from __future__ import annotations

from ..tuning import add_tune_parser, run_tune_command

__all__ = ["add_tune_parser", "run_tune_command"]
