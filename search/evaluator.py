"""Evaluators: schedule → metrics on a fixed noise set.

A schedule that yields NaN/inf, diverges, or is illegal for the model gives a failed
:class:`EvalResult` with its reason; it never raises into the caller.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field

import torch

from schedsearch.solvers import DiffusionModel, Schedule, SolverError

from .metrics.quality import LOWER_IS_BETTER, Metric, sample_batched
from .noise_set import NoiseSet


@dataclass(frozen=True)
class EvalResult:
    """Metrics of one schedule at one fidelity (sample count)."""

    metrics: Mapping[str, float]
    objective: float | None
    num_samples: int
    seconds: float
    error: str | None = None

    @property
    def failed(self) -> bool:
        return self.error is not None


class Evaluator(ABC):
    """Measures schedules; ``objective`` names the metric that is minimised."""

    objective: str
    max_samples: int

    @property
    def metric_names(self) -> tuple[str, ...]:
        """The metrics every evaluation reports (at least the objective)."""
        return (self.objective,)

    @abstractmethod
    def evaluate(self, schedule: Schedule, num_samples: int | None = None) -> EvalResult: ...


@dataclass
class SampleEvaluator(Evaluator):
    """Samples the noise set with the schedule, then applies every metric to the samples."""

    model: DiffusionModel
    noises: NoiseSet
    metrics: Sequence[Metric]
    objective: str
    guidance_scale: float | None = None
    batch_size: int = 1000
    divergence_bound: float = 1e3
    max_samples: int = field(init=False)

    def __post_init__(self) -> None:
        self.max_samples = len(self.noises)

    @property
    def metric_names(self) -> tuple[str, ...]:
        return tuple(dict.fromkeys(name for metric in self.metrics for name in metric.names))

    def evaluate(self, schedule: Schedule, num_samples: int | None = None) -> EvalResult:
        n = num_samples or self.max_samples
        start = time.perf_counter()
        noises = self.noises.head(n)
        try:
            samples = sample_batched(self.model, schedule, noises, self.guidance_scale, self.batch_size)
        except SolverError as exc:
            return EvalResult({}, None, n, time.perf_counter() - start, f"illegal schedule: {exc}")
        return self._measure(samples, noises, start)

    def evaluate_progressive(self, schedule: Schedule, rungs: Sequence[int]) -> Iterator[EvalResult]:
        """Results at growing sample counts ``rungs``, each draw sampled once: a rung's samples are the
        previous rung's plus the new draws, so stopping after any rung (as ASHA does) costs only the
        draws sampled so far. The last result equals ``evaluate(rungs[-1])`` up to float rounding
        (the batches differ). A failed rung ends the sequence."""
        start = time.perf_counter()
        parts: list[torch.Tensor] = []
        done = 0
        for n in rungs:
            if n <= done or n > self.max_samples:
                raise ValueError(f"rungs must grow within 1..{self.max_samples}: {list(rungs)}")
            new = NoiseSet(self.noises.noise[done:n], None if self.noises.labels is None else
                           self.noises.labels[done:n], self.noises.seed)
            try:
                parts.append(sample_batched(self.model, schedule, new, self.guidance_scale, self.batch_size))
            except SolverError as exc:
                yield EvalResult({}, None, n, time.perf_counter() - start, f"illegal schedule: {exc}")
                return
            done = n
            result = self._measure(torch.cat(parts), self.noises.head(n), start)
            yield result
            if result.failed:
                return

    def _measure(self, samples: torch.Tensor, noises: NoiseSet, start: float) -> EvalResult:
        """Every metric of ``samples`` (drawn from ``noises``), or the reason there are none."""
        n = len(noises)
        bad = int((~torch.isfinite(samples.reshape(n, -1)).all(1)).sum())
        if bad:
            return EvalResult({}, None, n, time.perf_counter() - start, f"non-finite samples (NaN/inf) in {bad} of {n}")
        peak = float(samples.abs().max())
        if peak > self.divergence_bound:
            return EvalResult({}, None, n, time.perf_counter() - start, f"diverged: |x| reaches {peak:.3g}")
        values: dict[str, float] = {}
        for metric in self.metrics:
            values.update(metric(samples, noises))
        objective = values.get(self.objective)
        if objective is None or not math.isfinite(objective):
            return EvalResult(values, None, n, time.perf_counter() - start, f"objective {self.objective!r} unavailable")
        sign = 1.0 if self.objective in LOWER_IS_BETTER else -1.0
        return EvalResult(values, sign * objective, n, time.perf_counter() - start)


def successive_halving(
    evaluator: Evaluator, schedules: Sequence[Schedule], levels: Sequence[int], keep: float = 0.5
) -> list[list[tuple[int, EvalResult]]]:
    """Evaluate all schedules at ``levels[0]`` samples, the best ``keep`` fraction at the next level, …

    Returns, per level, the (schedule index, result) pairs evaluated there — every level is kept.
    """
    alive = list(range(len(schedules)))
    history: list[list[tuple[int, EvalResult]]] = []
    for depth, n in enumerate(levels):
        results = [(i, evaluator.evaluate(schedules[i], n)) for i in alive]
        history.append(results)
        ok = sorted((r.objective, i) for i, r in results if r.objective is not None)
        if depth + 1 < len(levels):
            alive = [i for _, i in ok[: max(1, math.ceil(keep * len(ok)))]]
            if not alive:
                break
    return history
