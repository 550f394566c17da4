"""Predictor-guided search (S³, Liu et al.): breed many candidates, let the learned predictor rank them,
truly evaluate only the best (plus a small share drawn at random for exploration), retrain, repeat.

A round serves ``round_size`` proposals. At its start the predictor is fitted from scratch on
every observation so far (failed trials count as the worst). Each of the round's slots (NFE in
turn) then breeds ``candidates / round_size`` children exactly as S³'s evolution breeds one —
parents rank-selected among the ``top`` best at that NFE, crossover, mutation — drops those
already measured or queued, and keeps the child the predictor ranks best (with probability
``explore``, one of them drawn uniformly instead). Screening per slot keeps the evolution's
diversity (every slot draws its own parents) while the predictor picks among many mutations.
The first ``initial`` proposals are the best schedule so far (the baselines are measured first) with each
other analytical first step, then random schedules; with the baselines they are what the first fit learns
from. The analytical first step changes the layout of the times, so its species are tuned apart, and a
predictor that has seen that step only on random schedules ranks it last: on gmm-8d the better species
("mean") is one mutation from the best baseline, yet guided seeds that never measured it stalled (seed 5 at
3.35e-3 MMD; replayed, 11 of a slot's 256 children beat its best; the six best, all with the step added,
ranked 120th-215th).
The predictor reads each schedule's errors on Gaussian data (``probe``, :mod:`schedsearch.predictors.probe`):
with them a fit on a few dozen trials already ranks well enough to screen 256 children per proposal (gmm-8d
NFE 4, ``benchmarks/search_strategies.py``: on 10 seeds the defaults (2,048 candidates per round, the first
proposals as above) reached 1.1x evolution's mean final best on all 10, after 76 ± 26 evaluations (8 within a
third of evolution's 300; with random first proposals 8 of 10, 102 ± 15), held-out best 0.00111 ± 0.00051
against evolution's 0.00137 ± 0.00073 after 300; breeding and ranking 2,048 children takes about 1 s a round of 8
proposals on the 2-core CPU, from ``benchmarks/predictor.py --sections speed``'s figures). With
``spectrum`` and a model to measure, it also reads each schedule's errors on the model's own sensitivity
(:mod:`schedsearch.predictors.spectrum`), measured once at the first fit (``measure_spectrum``, given by the
search loop) and kept in every checkpoint. That lifts τ on 2,000 digits trials, but not the search: fitted on
a few dozen trials, gmm-8d NFE 4 reached evolution's target within 150 evaluations on 2 of 5 seeds with it,
4 of 5 without (at 512 candidates); so it is off by default.

The round's queue is part of the strategy's state, and a fit is a pure function of the
observations and the strategy's seed, so a resumed search proposes what the uninterrupted one
would have. Each fit is stored as the ``predictor`` artifact (checkpoint bytes + metadata: the
trials it learnt from, its training τ, the code version); a resumed search reloads it instead
of refitting when it was fitted on exactly the observations at hand.
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import numpy as np
import torch
from schedsearch.predictors.predictor import Predictor, PredictorConfig
from schedsearch.predictors.spectrum import ModelSpectrum
from schedsearch.solvers import Schedule

from ..space import Genome, SearchSpace
from .base import Observation, Proposal, Strategy
from .evolution import _Population, breed

PREDICTOR_ARTIFACT = "predictor"


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("schedsearch")
    except PackageNotFoundError:  # pragma: no cover - running from a checkout without installing
        return "unknown"


class PredictorGuided(Strategy):
    name = "guided"
    artifact_kinds = (PREDICTOR_ARTIFACT,)

    def __init__(self, space: SearchSpace, rng: np.random.Generator, initial: int = 4, round_size: int = 8,
                 candidates: int = 2048, explore: float = 0.1, top: int = 15, crossover_rate: float = 0.5,
                 epochs: int = 200, kind: str = "pool", hidden: int = 64, ensemble: int = 1, probe: bool = True,
                 spectrum: bool = False, measure_spectrum: Callable[[], ModelSpectrum] | None = None) -> None:
        super().__init__(space, rng)
        if not 0.0 <= explore <= 1.0:
            raise ValueError(f"guided: explore {explore} must lie in [0, 1]")
        if not isinstance(probe, bool):
            raise ValueError(f"guided: probe {probe!r} must be true or false")  # noqa: TRY004 - the config's one line
        if not isinstance(spectrum, bool):
            raise ValueError(f"guided: spectrum {spectrum!r} must be true or false")  # noqa: TRY004 - as above
        if min(initial, round_size, candidates, top, epochs, ensemble) < 1:
            raise ValueError("guided: initial, round_size, candidates, top, epochs and ensemble must be ≥ 1")
        self.initial, self.round_size, self.candidates = initial, round_size, candidates
        self.explore, self.top, self.crossover_rate = explore, top, crossover_rate
        self.predictor_config = PredictorConfig(kind=kind, hidden=hidden, epochs=epochs, ensemble=ensemble,
                                                probe=probe)
        self.seed = int(rng.integers(2**31 - 1))  # the fits' seed: one draw, fixed for the strategy's life
        # the model's spectrum, measured at the first fit that needs it (None: the strategy runs without a model)
        self._measure_spectrum = measure_spectrum if spectrum else None
        self.spectrum: ModelSpectrum | None = None
        self.population = _Population(space)  # the successful observations, as the evolution breeds from them
        self.measured: dict[int, tuple[Schedule, float | None]] = {}  # every observation: the predictor's data
        self.asked = 0
        self.queue: list[tuple[Genome, dict[str, Any]]] = []
        self.rounds = 0
        self.predictor: Predictor | None = None
        self.fitted_on: str | None = None  # fingerprint of the observations the predictor learnt from
        self._stored: tuple[bytes, dict[str, Any]] | None = None  # a loaded checkpoint, used when it fits
        self._new_checkpoint: tuple[bytes, dict[str, Any]] | None = None

    # -- ask / tell ------------------------------------------------------------------------

    def ask(self, n: int) -> list[Proposal]:
        out = []
        while len(out) < n:
            if self.asked < self.initial or len(self.population) < 2:
                self.asked += 1
                out.append(self._initial())
                continue
            if not self.queue:
                self._new_round()
            genome, meta = self.queue.pop(0)
            self.asked += 1
            out.append(Proposal(self.space.decode(genome), meta))
        return out

    def tell(self, observations: Sequence[Observation]) -> None:
        for obs in observations:
            if obs.number >= 0 and obs.number not in self.measured:
                self.measured[obs.number] = (obs.schedule, obs.objective)
                self.population.add([obs])

    def _initial(self) -> Proposal:
        """One of the first proposals: while the analytical first step is free, the best schedule so far with each
        other first step in turn (a species then starts from tuned times, not from random ones), then random ones."""
        ranked = self.population.ranked()
        if ranked and self.space.free("analytic_first_step"):
            best = ranked[0].genome
            others = [a for a in self.space.spec.analytic if a is not best.analytic]
            if self.asked <= len(others):
                genome = self.space.with_analytic(best, others[self.asked - 1], self.rng)
                return Proposal(self.space.decode(genome), {"op": "transplant", "parents": [ranked[0].number]})
        return Proposal(self.space.decode(self.space.random(self.rng)), {"op": "random"})

    # -- a round ---------------------------------------------------------------------------

    def _fit(self) -> Predictor:
        """The predictor of every observation so far (a failure ranks below every measured schedule)."""
        numbers = sorted(self.measured)
        fingerprint = hashlib.sha256(",".join(map(str, numbers)).encode()).hexdigest()[:16]
        if self.predictor is not None and self.fitted_on == fingerprint:
            return self.predictor
        if self._stored is not None and self._stored[1].get("fitted_on") == fingerprint:
            predictor = Predictor.from_bytes(self._stored[0], self._stored[1]["checkpoint"], self.space.noise_schedule)
            self.spectrum = self.spectrum or predictor.spectrum  # a resumed search need not measure it again
            self._stored = None
        else:
            values = [v for _, v in self.measured.values() if v is not None]
            worst = max(values, default=0.0)
            objectives = [worst + 1.0 + abs(worst) if self.measured[k][1] is None else float(self.measured[k][1])
                          for k in numbers]
            if self.spectrum is None and self._measure_spectrum is not None:
                self.spectrum = self._measure_spectrum()
            predictor = Predictor(self.space.noise_schedule, self.predictor_config, seed=self.seed,
                                  spectrum=self.spectrum)
            report = predictor.fit([self.measured[k][0] for k in numbers], objectives,
                                   torch.Generator().manual_seed(self.seed + len(numbers)))
            weights, meta = predictor.to_bytes()
            self._new_checkpoint = (weights, {
                "checkpoint": meta, "fitted_on": fingerprint, "trials": numbers,
                "kendall_tau_train": report.kendall_tau_train, "loss_first": report.loss_history[0],
                "loss_last": report.loss_history[-1], "round": self.rounds, "code_version": _version()})
        self.predictor, self.fitted_on = predictor, fingerprint
        return predictor

    def _new_round(self) -> None:
        self.rounds += 1
        predictor = self._fit()
        nfes = list(self.space.spec.nfe)
        taken = {schedule.canonical_hash() for schedule, _ in self.measured.values()}
        group = max(1, self.candidates // self.round_size)
        queue: list[tuple[Genome, dict[str, Any]]] = []
        for slot in range(self.round_size):
            nfe = nfes[slot % len(nfes)]
            children: dict[str, tuple[Genome, dict[str, Any], Any]] = {}
            for _ in range(group):
                genome, meta = breed(self.space, self.population, self.rng, nfe, self.top, self.crossover_rate)
                schedule = self.space.decode(genome)
                h = schedule.canonical_hash()
                if h not in taken and h not in children:
                    children[h] = (genome, meta, schedule)
            if not children:
                continue
            entries = list(children.items())
            scores = predictor.predict([e[1][2] for e in entries])
            if self.rng.random() < self.explore:
                pick, op = int(self.rng.integers(len(entries))), "explore"
            else:
                pick, op = int(np.argmin(scores)), "guided"
            h, (genome, meta, _) = entries[pick]
            taken.add(h)
            queue.append((genome, {**meta, "op": op, "predicted": float(scores[pick]), "round": self.rounds}))
        if not queue:  # every child bred is already measured: fall back to fresh random schedules
            queue = [(self.space.random(self.rng), {"op": "random", "round": self.rounds})]
        self.queue = queue

    # -- state and artifacts ---------------------------------------------------------------

    def artifacts(self) -> dict[str, tuple[bytes, dict[str, Any]]]:
        if self._new_checkpoint is None:
            return {}
        out, self._new_checkpoint = {PREDICTOR_ARTIFACT: self._new_checkpoint}, None
        return out

    def load_artifact(self, kind: str, data: bytes, meta: Mapping[str, Any]) -> None:
        if kind == PREDICTOR_ARTIFACT and "checkpoint" in meta:
            self._stored = (data, dict(meta))

    def _own_state(self) -> Any:
        return {"asked": self.asked, "rounds": self.rounds, "seed": self.seed,
                "queue": [[genome.to_dict(), meta] for genome, meta in self.queue]}

    def _load_own_state(self, state: Any) -> None:
        self.asked, self.rounds, self.seed = int(state["asked"]), int(state["rounds"]), int(state["seed"])
        self.queue = [(Genome.from_dict(genome), dict(meta)) for genome, meta in state["queue"]]
