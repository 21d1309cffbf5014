"""Errors of the model layer."""

from instructrec.errors import InstructRecError


class ModelError(InstructRecError):
    """Base class for model-layer errors."""


class ModelNotFound(ModelError):
    """The model directory does not hold a loadable model."""


class DataNotFound(ModelError):
    """The data set is not on disk; `make data` (or `python -m model.data fetch`) gets it."""


class ScoringError(ModelError):
    """The model failed on a batch, or returned the wrong number of outputs."""
