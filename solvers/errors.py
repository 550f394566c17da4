"""Errors raised by the sampling framework; each message names the offending field."""

from __future__ import annotations


class SolverError(ValueError):
    """Base class for problems a user can fix (bad schedule, bad model, bad input)."""


class ScheduleError(SolverError):
    """A schedule (or its JSON) is malformed or illegal for the model it is used with."""


class ModelLoadError(SolverError):
    """A model reference cannot be resolved or loaded."""
