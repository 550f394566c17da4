"""Evolutionary strategies: S³'s steady-state evolution and AutoDiffusion's generational one.

Both keep every successful observation (the population is the set of measured schedules,
ranked by objective, ties by trial number) and breed with the space's ``crossover`` and
``mutate``; parents are re-encoded from their stored schedules, so a strategy restored
from the store breeds from exactly what the uninterrupted one had.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..space import Genome, SearchSpace
from .base import Observation, Proposal, Strategy


@dataclass(frozen=True)
class _Member:
    number: int
    objective: float
    nfe: int
    genome: Genome


class _Population:
    """Every successful observation, ranked (objective, then trial number) overall and per NFE."""

    def __init__(self, space: SearchSpace) -> None:
        self.space = space
        self.members: dict[int, _Member] = {}
        self.seen: set[int] = set()

    def add(self, observations: Sequence[Observation]) -> None:
        for obs in observations:
            if obs.number in self.seen:
                continue
            self.seen.add(obs.number)
            if obs.objective is not None:
                self.members[obs.number] = _Member(obs.number, float(obs.objective), obs.nfe,
                                                   self.space.encode(obs.schedule))

    def ranked(self, nfe: int | None = None) -> list[_Member]:
        pool = [m for m in self.members.values() if nfe is None or m.nfe == nfe]
        return sorted(pool, key=lambda m: (m.objective, m.number))

    def __len__(self) -> int:
        return len(self.members)


def _rank_select(rng: np.random.Generator, ranked: Sequence[_Member]) -> _Member:
    """Linear rank selection: the i-th best is drawn with weight (k − i)."""
    k = len(ranked)
    weights = np.arange(k, 0, -1, dtype=np.float64)
    return ranked[int(rng.choice(k, p=weights / weights.sum()))]


def breed(space: SearchSpace, population: _Population, rng: np.random.Generator, nfe: int, top: int,
          crossover_rate: float) -> tuple[Genome, dict[str, Any]]:
    """One child at ``nfe``: parents rank-selected among the ``top`` best at that NFE (or overall while
    it has none), crossover with ``crossover_rate``, then mutation."""
    ranked = population.ranked(nfe)[:top] or population.ranked()[:top]
    first = _rank_select(rng, ranked)
    parents = [first.number]
    genome = first.genome
    if len(ranked) > 1 and rng.random() < crossover_rate:
        second = _rank_select(rng, ranked)
        genome = space.crossover(genome, second.genome, rng)
        parents.append(second.number)
    genome = space.mutate(genome, rng)
    if genome.nfe != nfe:
        genome = space.with_nfe(genome, nfe, rng)
    return genome, {"op": "evolve", "parents": parents}


class SteadyStateEvolution(Strategy):
    """S³ (Liu et al.): each child from parents rank-selected among the ``top`` best at its NFE,
    crossover with ``crossover_rate``, then mutation; ``initial`` random schedules first."""

    name = "evolution"

    def __init__(self, space: SearchSpace, rng: np.random.Generator, top: int = 15, crossover_rate: float = 0.5,
                 initial: int = 8) -> None:
        super().__init__(space, rng)
        self.top, self.crossover_rate, self.initial = top, crossover_rate, initial
        self.population = _Population(space)
        self.asked = 0

    def ask(self, n: int) -> list[Proposal]:
        out = []
        for _ in range(n):
            self.asked += 1
            if self.asked <= self.initial or not self.population:
                genome, meta = self.space.random(self.rng), {"op": "random"}
            else:
                genome, meta = self._child()
            out.append(Proposal(self.space.decode(genome), meta))
        return out

    def _child(self) -> tuple[Genome, dict[str, Any]]:
        nfe = int(self.rng.choice(self.space.spec.nfe))
        return breed(self.space, self.population, self.rng, nfe, self.top, self.crossover_rate)

    def tell(self, observations: Sequence[Observation]) -> None:
        self.population.add(observations)

    def _own_state(self) -> Any:
        return {"asked": self.asked}

    def _load_own_state(self, state: Any) -> None:
        self.asked = int(state["asked"])


class GenerationalEvolution(Strategy):
    """AutoDiffusion (Li et al.): generations of ``population`` schedules; the ``keep`` best of everything
    measured survive, ``mutants`` are mutations of them, ``crossovers`` their crossovers, the rest random.
    A generation is built when the previous one is fully measured."""

    name = "generational"

    def __init__(self, space: SearchSpace, rng: np.random.Generator, population: int = 50, keep: int = 10,
                 mutants: int = 25, crossovers: int = 10) -> None:
        super().__init__(space, rng)
        if keep + mutants + crossovers > population:
            raise ValueError("generational: keep + mutants + crossovers must not exceed the population")
        self.size, self.keep, self.mutants, self.crossovers = population, keep, mutants, crossovers
        self.population = _Population(space)
        self.pending: list[tuple[Genome, dict[str, Any]]] = []
        self.generation = -1
        self.outstanding: set[tuple[int, int]] = set()  # (generation, index) asked but not yet told

    def ask(self, n: int) -> list[Proposal]:
        if not self.pending and not self.outstanding:
            self._next_generation()
        out = []
        while self.pending and len(out) < n:
            genome, meta = self.pending.pop(0)
            self.outstanding.add((meta["generation"], meta["index"]))
            out.append(Proposal(self.space.decode(genome), meta))
        return out

    def _next_generation(self) -> None:
        self.generation += 1
        g = self.generation
        elite = self.population.ranked()[: self.keep]
        fresh: list[tuple[Genome, dict[str, Any]]] = []
        if elite:
            for _ in range(self.mutants):
                parent = elite[int(self.rng.integers(len(elite)))]
                fresh.append((self.space.mutate(parent.genome, self.rng), {"op": "mutate", "parents": [parent.number]}))
            for _ in range(self.crossovers if len(elite) > 1 else 0):
                i, j = (int(v) for v in self.rng.choice(len(elite), size=2, replace=False))
                child = self.space.mutate(self.space.crossover(elite[i].genome, elite[j].genome, self.rng), self.rng)
                fresh.append((child, {"op": "crossover", "parents": [elite[i].number, elite[j].number]}))
        while len(fresh) < self.size - len(elite):
            fresh.append((self.space.random(self.rng), {"op": "random"}))
        self.pending = [(genome, {**meta, "generation": g, "index": i}) for i, (genome, meta) in enumerate(fresh)]

    def tell(self, observations: Sequence[Observation]) -> None:
        for obs in observations:
            if "generation" in obs.meta:
                self.outstanding.discard((int(obs.meta["generation"]), int(obs.meta["index"])))
        self.population.add(observations)

    def _own_state(self) -> Any:
        return {"pending": [[genome.to_dict(), meta] for genome, meta in self.pending], "generation": self.generation,
                "outstanding": [list(x) for x in sorted(self.outstanding)]}

    def _load_own_state(self, state: Any) -> None:
        self.pending = [(Genome.from_dict(genome), dict(meta)) for genome, meta in state["pending"]]
        self.generation = int(state["generation"])
        self.outstanding = {tuple(x) for x in state["outstanding"]}  # type: ignore[misc]
