"""The strategy seam: ``ask`` for schedules, ``tell`` results, ``state``/``restore`` for resume.

A strategy owns an injected, seeded ``numpy.random.Generator`` and never touches global RNG
state. Its learning (``tell``) is a pure function of the observations it was given — never
of the order they arrived in, never of its RNG — so a search rebuilt from the store
(``restore`` with every observation and the state saved with the last ``ask``) proposes
exactly what the uninterrupted search would have.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
from schedsearch.solvers import Schedule

from ..space import SearchSpace


@dataclass(frozen=True)
class Proposal:
    """A schedule to evaluate and the strategy's bookkeeping for it (stored with the trial)."""

    schedule: Schedule
    meta: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class Observation:
    """A measured trial: its number, schedule and objective (None: it failed)."""

    number: int
    schedule: Schedule
    objective: float | None
    meta: Mapping[str, Any] = field(default_factory=dict)

    @property
    def nfe(self) -> int:
        return self.schedule.nfe


class Strategy(ABC):
    """Proposes schedules from a :class:`SearchSpace`; learns from observations."""

    name: ClassVar[str]
    #: kinds of store artifacts the strategy keeps (e.g. a predictor checkpoint): ``artifacts`` hands the
    #: loop new versions to store with the next state, ``load_artifact`` gives the stored ones back on resume
    artifact_kinds: ClassVar[tuple[str, ...]] = ()

    def __init__(self, space: SearchSpace, rng: np.random.Generator) -> None:
        self.space = space
        self.rng = rng

    @abstractmethod
    def ask(self, n: int) -> list[Proposal]:
        """Up to ``n`` new proposals (fewer only while the strategy waits for results it needs)."""

    @abstractmethod
    def tell(self, observations: Sequence[Observation]) -> None:
        """Learn from measured trials (telling a trial twice is harmless)."""

    def state(self) -> bytes:
        """What ``restore`` needs besides the observations: the RNG state and the strategy's own, as JSON
        (the store keeps it; nothing is ever unpickled from a database)."""
        return json.dumps({"rng": self.rng.bit_generator.state, "own": self._own_state()}).encode()

    def restore(self, observations: Sequence[Observation], state: bytes | None,
                pending: Sequence[Mapping[str, Any]] = ()) -> None:
        """Rebuild from every observation so far and the state saved with the last ``ask``.

        ``pending`` holds the bookkeeping of proposals that were asked but are not measured yet
        (still queued or running in the store).
        """
        if state is not None:
            saved = load_state(state)
            self.rng.bit_generator.state = saved["rng"]
            self._load_own_state(saved["own"])
        self.tell(observations)

    def close(self) -> None:
        """Release what the strategy holds (database connections)."""

    def artifacts(self) -> dict[str, tuple[bytes, dict[str, Any]]]:
        """New artifact versions (kind → (data, meta)) to store with the next state; each is handed out once."""
        return {}

    def load_artifact(self, kind: str, data: bytes, meta: Mapping[str, Any]) -> None:
        """A stored artifact of one of ``artifact_kinds``, given back before ``restore``."""

    def _own_state(self) -> Any:
        """JSON-able values only."""
        return None

    def _load_own_state(self, state: Any) -> None:
        pass


class StateError(ValueError):
    """A stored strategy state that cannot be read (written by an older schedsearch, or damaged)."""


def load_state(state: bytes) -> dict[str, Any]:
    """A strategy state saved by :meth:`Strategy.state` (JSON)."""
    try:
        saved = json.loads(state.decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise StateError("strategy state: not the JSON this schedsearch writes (saved by an older version? "
                         "resume it with that version, or start a new search)") from None
    if not isinstance(saved, dict) or "rng" not in saved:
        raise StateError("strategy state: missing its RNG state")
    return saved
