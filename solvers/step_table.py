"""Many steps as arrays: each step's *structure* (its discrete decisions) and its relaxations.

A search breeds schedules whose steps repeat a few hundred structures — prediction, order, estimator,
corrector and each derivative's active points — while their relaxations are continuous, so almost every
step is new as a whole. Whatever depends only on the structure (a plan's terms, a predictor's one-hot
features) is computed once per structure and gathered by index; the relaxations come as one array.
One pass over the steps, the only per-step Python work of the consumers (:func:`~.plan.dense_plans`,
the predictor's encoding).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from itertools import chain

import numpy as np

from .schedule import Derivative, Step, StructureKey


@dataclass(frozen=True)
class StepTable:
    """``structure[g]``: step g's index into ``structures``; ``relaxations[g, k]``: its derivative k's
    relaxation, 1.0 past its derivatives (``[steps, most derivatives + 1]``: the last column is always 1.0,
    the relaxation of a corrector's extra derivative)."""

    structure: np.ndarray
    structures: tuple[StructureKey, ...]
    relaxations: np.ndarray

    def __len__(self) -> int:
        return int(self.structure.shape[0])


def structure_derivatives(key: StructureKey) -> tuple[Derivative, ...]:
    """The derivatives of a structure, each with relaxation 1."""
    return tuple(Derivative(points) for points in key[4])


def step_table(steps: Sequence[Step]) -> StepTable:
    """The table of ``steps`` (in order)."""
    index: dict[StructureKey, int] = {}
    structure = np.fromiter((index.setdefault(s.structure, len(index)) for s in steps), dtype=np.int64,
                            count=len(steps))
    derivatives = [s.derivatives for s in steps]
    counts = np.fromiter(map(len, derivatives), dtype=np.int64, count=len(steps))
    width = 1 + int(counts.max(initial=0))
    relaxations = np.ones((len(steps), width))
    relaxations[np.arange(width) < counts[:, None]] = np.fromiter(
        (d.relaxation for d in chain.from_iterable(derivatives)), dtype=np.float64, count=int(counts.sum()))
    return StepTable(structure, tuple(index), relaxations)
