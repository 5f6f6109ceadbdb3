"""Resumable training; moved to :mod:`skcgcnn.estimators` (``estimators/_callbacks.py``),
importable here too."""
from .estimators._callbacks import (STATE_FORMAT, STATE_VERSION,  # noqa: F401
                                    AtomicCheckpoint, LoadTrainingState, TrainingCheckpoint,
                                    TrainingStateError, atomic_torch_save,
                                    read_training_state)
