"""The search space: which schedules a search may propose, and how strategies move through it.

A candidate is a :class:`Genome` of *slots*: one slot per model evaluation (NFE + 1 with an
analytical first step), each with a λ-width and a per-step :class:`Gene`. Decoding turns
any genome into a legal :class:`Schedule` with exactly the genome's NFE:

- times are the cumulative λ-widths between the model's ends (softmax of log-widths), so
  they are monotone by construction; on integer-time models they are rounded to distinct
  integers (diffusers timesteps);
- an ``implicit`` corrector on a slot merges it with the next slot — one step that spends
  two evaluations — so the evaluation count never changes (Liu et al., USF: an implicit
  corrector costs one NFE);
- each step's decisions are made legal for its position: orders capped by the earlier
  points that exist, first order into the data (σ = 0), no corrector on the last step,
  iPNDM only with noise prediction and its fixed points, derivative points that exist.

Decisions that are not free come from ``base_solver`` (a baseline's steps for the same
number of steps), so ``free=("times",)`` is AutoDiffusion's timestep search and the full
set is S³'s. ``random``, ``mutate`` and ``crossover`` work on genomes; ``encode`` maps a
schedule back to its canonical genome; ``suggest`` asks an Optuna trial for the same
parameters (every vector decodes to a legal schedule).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field, replace
from itertools import combinations
from typing import Any

import numpy as np

from schedsearch.solvers import (
    BASELINES,
    AnalyticFirstStep,
    Corrector,
    Derivative,
    Estimator,
    NoiseSchedule,
    Prediction,
    Schedule,
    ScheduleError,
    Step,
    default_derivatives,
)
from schedsearch.solvers.noise_schedules import DiscreteVP

#: the decisions a search can free; "times" are the model times, "end_time" the final time
DECISIONS = ("times", "end_time", "prediction", "order", "estimator", "derivatives", "relaxation", "corrector",
             "analytic_first_step")
PRESETS: dict[str, tuple[str, ...]] = {
    "times": ("times",),  # AutoDiffusion: timesteps only, decisions of the base solver
    "usf": DECISIONS,  # S³: everything
}
MAX_DERIVATIVES = 3  # order ≤ 4
LOG_WIDTH_RANGE = 3.0  # log-widths live in [-3, 3]: adjacent steps differ by at most e⁶ in λ


class SpaceError(ValueError):
    """A search space that cannot be built (unknown decision, empty choices, NFE out of reach)."""


@dataclass(frozen=True)
class SpaceSpec:
    """What is searched. Orders, predictions, … are the legal values of each free decision."""

    nfe: tuple[int, ...]
    free: frozenset[str] = frozenset(DECISIONS)
    orders: tuple[int, ...] = (1, 2, 3, 4)
    order_weights: tuple[float, ...] = (0.2, 0.4, 0.3, 0.1)  # S³'s prior, aligned with ``orders``
    predictions: tuple[Prediction, ...] = (Prediction.DATA, Prediction.NOISE)
    estimators: tuple[Estimator, ...] = (Estimator.TAYLOR, Estimator.BH1, Estimator.BH2, Estimator.IPNDM)
    correctors: tuple[Corrector, ...] = (Corrector.NONE, Corrector.PSEUDO, Corrector.IMPLICIT)
    analytic: tuple[AnalyticFirstStep | None, ...] = (None, AnalyticFirstStep.ZERO, AnalyticFirstStep.MEAN)
    relaxation: tuple[float, float] = (0.5, 1.5)
    max_points: int = 4
    end_time: tuple[float, float] | None = None  # (lo, hi) of a free final time; None: derived from the model
    base_solver: str = "unipc_bh2"
    integer_times: bool | None = None  # None: integer timesteps on discrete (diffusers) models
    time_sigma: float = 0.3  # mutation noise of a log λ-width
    mutation_rate: float = 0.3  # chance that a free decision is mutated (S³: 0.3)
    implicit_rate: float = 0.1  # chance of an implicit corrector when drawing a corrector at random

    def __post_init__(self) -> None:
        object.__setattr__(self, "nfe", tuple(sorted(set(self.nfe))))
        object.__setattr__(self, "predictions", tuple(Prediction(v) for v in self.predictions))
        object.__setattr__(self, "estimators", tuple(Estimator(v) for v in self.estimators))
        object.__setattr__(self, "correctors", tuple(Corrector(v) for v in self.correctors))
        object.__setattr__(self, "analytic", tuple(None if v in (None, "none") else AnalyticFirstStep(v)
                                                   for v in self.analytic))
        if Estimator.FREE in self.estimators:
            raise SpaceError("estimators: 'free' weights are learned by refinement (schedsearch refine), not searched")
        unknown = set(self.free) - set(DECISIONS)
        if unknown:
            raise SpaceError(f"free: unknown decision {sorted(unknown)[0]!r} (known: {', '.join(DECISIONS)})")
        if not self.nfe or any(n < 1 for n in self.nfe):
            raise SpaceError(f"nfe: {list(self.nfe)} must be one or more positive integers")
        if not self.orders or any(o not in (1, 2, 3, 4) for o in self.orders):
            raise SpaceError(f"orders: {list(self.orders)} must be values in 1..4")
        if len(self.order_weights) != len(self.orders) or min(self.order_weights) < 0:
            raise SpaceError("order_weights: one non-negative weight per order")
        for name in ("predictions", "estimators", "correctors", "analytic"):
            if not getattr(self, name):
                raise SpaceError(f"{name}: at least one value is needed")
        lo, hi = self.relaxation
        if not (math.isfinite(lo) and math.isfinite(hi) and 0 < lo <= hi):
            raise SpaceError(f"relaxation: ({lo}, {hi}) must be a range of positive numbers")
        if self.base_solver not in BASELINES:
            raise SpaceError(f"base_solver: unknown {self.base_solver!r} (known: {', '.join(BASELINES)})")
        if self.max_points < 1:
            raise SpaceError("max_points: at least 1")


@dataclass(frozen=True)
class Gene:
    """The decisions of one slot. Derivative points/relaxations are kept for every possible derivative,
    so that an order change by mutation keeps what was learnt about the others."""

    prediction: Prediction
    order: int
    estimator: Estimator
    points: tuple[tuple[int, ...], ...]
    relaxations: tuple[float, ...]
    corrector: Corrector


@dataclass(frozen=True)
class Genome:
    """``nfe`` model evaluations: one slot (log λ-width + gene) per evaluation and one more with an
    analytical first step. ``end`` is None for a schedule that ends at the data (σ = 0), else the
    position of the final time in the end-time range (0 = its smallest time, log scale)."""

    nfe: int
    log_widths: tuple[float, ...]
    genes: tuple[Gene, ...]
    end: float | None = None
    analytic: AnalyticFirstStep | None = None

    @property
    def slots(self) -> int:
        return len(self.genes)

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-able values (strategies save pending genomes with their state)."""
        return {"nfe": self.nfe, "log_widths": list(self.log_widths), "end": self.end,
                "analytic": None if self.analytic is None else self.analytic.value,
                "genes": [{"prediction": g.prediction.value, "order": g.order, "estimator": g.estimator.value,
                           "points": [list(p) for p in g.points], "relaxations": list(g.relaxations),
                           "corrector": g.corrector.value} for g in self.genes]}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Genome:
        genes = tuple(Gene(Prediction(g["prediction"]), int(g["order"]), Estimator(g["estimator"]),
                           tuple(tuple(int(v) for v in p) for p in g["points"]),
                           tuple(float(v) for v in g["relaxations"]), Corrector(g["corrector"]))
                      for g in data["genes"])
        analytic = None if data["analytic"] is None else AnalyticFirstStep(data["analytic"])
        end = None if data["end"] is None else float(data["end"])
        return cls(int(data["nfe"]), tuple(float(v) for v in data["log_widths"]), genes, end, analytic)


@dataclass(frozen=True)
class _Layout:
    """The steps a genome decodes to: per step, its first slot, its λ-width and whether it is implicit."""

    first_slot: tuple[int, ...]
    widths: tuple[float, ...]
    implicit: tuple[bool, ...]


@dataclass
class SearchSpace:
    """Legal schedules for one model (its noise schedule) under a :class:`SpaceSpec`."""

    spec: SpaceSpec
    noise_schedule: NoiseSchedule
    has_data_mean: bool = False
    _lambda_start: float = field(init=False, repr=False)
    _lambda_stop: float = field(init=False, repr=False)
    _end_range: tuple[float, float] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        spec, ns = self.spec, self.noise_schedule
        analytic = tuple(a for a in spec.analytic if a is not AnalyticFirstStep.MEAN or self.has_data_mean)
        if not analytic:
            raise SpaceError("analytic: 'mean' needs a model with a data mean; allow none or zero")
        self.spec = replace(spec, analytic=analytic)
        self._lambda_start = float(ns.lambda_(ns.t_max))
        self._lambda_stop = float(ns.lambda_(ns.t_min))
        if not (math.isfinite(self._lambda_start) and math.isfinite(self._lambda_stop)):
            raise SpaceError(f"the model's time range [{ns.t_min:g}, {ns.t_max:g}] needs finite λ at both ends")
        if spec.end_time is not None:
            lo, hi = spec.end_time
        else:  # the final time within 1.5 units of λ above the model's smallest time
            lo, hi = ns.t_min, float(ns.t_of_lambda(self._lambda_stop - 1.5))
        if not (ns.t_min - 1e-12 <= lo < hi <= ns.t_max):
            raise SpaceError(f"end_time: ({lo:g}, {hi:g}) must be an increasing range inside "
                             f"[{ns.t_min:g}, {ns.t_max:g}]")
        self._end_range = (float(lo), float(hi))
        max_steps = max(self.spec.nfe) + 1
        if self.integer_times and max_steps > ns.t_max - ns.t_min:
            raise SpaceError(f"nfe: {max(self.spec.nfe)} needs more distinct timesteps than the model has")

    # -- properties ------------------------------------------------------------------------

    @property
    def integer_times(self) -> bool:
        if self.spec.integer_times is not None:
            return self.spec.integer_times
        return isinstance(self.noise_schedule, DiscreteVP)

    def free(self, decision: str) -> bool:
        return decision in self.spec.free

    # -- decoding --------------------------------------------------------------------------

    def decode(self, genome: Genome) -> Schedule:
        """The legal schedule of ``genome`` (exactly ``genome.nfe`` model evaluations)."""
        analytic = genome.analytic if self.free("analytic_first_step") else None
        if genome.slots != genome.nfe + (analytic is not None):
            raise SpaceError(f"genome: {genome.slots} slots for NFE {genome.nfe}")
        layout = self._layout(genome)
        n = len(layout.widths)
        end = genome.end if self.free("end_time") else None
        to_data = end is None
        times = self._times(layout.widths, end)
        template = self._template(n, to_data)
        steps = tuple(
            self._step(genome.genes[layout.first_slot[k]], template[k], k, n, to_data, layout.implicit[k])
            for k in range(n)
        )
        return Schedule(self.noise_schedule.time_domain, times, steps, analytic_first_step=analytic)

    def _layout(self, genome: Genome) -> _Layout:
        slots = genome.slots
        widths = [math.exp(_clamp(w, -LOG_WIDTH_RANGE, LOG_WIDTH_RANGE)) for w in genome.log_widths]
        first, out_widths, implicit = [], [], []
        i = 0
        while i < slots:
            gene = genome.genes[i]
            merge = (self.free("corrector") and gene.corrector is Corrector.IMPLICIT
                     and gene.estimator is not Estimator.IPNDM and i + 1 < slots - 1)
            first.append(i)
            out_widths.append(widths[i] + (widths[i + 1] if merge else 0.0))
            implicit.append(merge)
            i += 2 if merge else 1
        return _Layout(tuple(first), tuple(out_widths), tuple(implicit))

    def _times(self, widths: Sequence[float], end: float | None) -> tuple[float, ...]:
        ns = self.noise_schedule
        n = len(widths)
        w = np.asarray(widths, dtype=np.float64)
        cum = np.concatenate([[0.0], np.cumsum(w)]) / w.sum()
        if end is None:  # n model times in [λ_start, λ_stop], the last width is slack; then the data
            lam = self._lambda_start + (self._lambda_stop - self._lambda_start) * cum[:n]
            model = np.asarray(ns.t_of_lambda(lam), dtype=np.float64)
            model[0] = ns.t_max
            final = ns.data_time
        else:
            t_end = self._end_time(end)
            lam_end = float(ns.lambda_(t_end))
            lam = self._lambda_start + (lam_end - self._lambda_start) * cum
            model = np.asarray(ns.t_of_lambda(lam[:n]), dtype=np.float64)
            model[0] = ns.t_max
            final = t_end
        if self.integer_times:
            model, final = _distinct_integers(model, final, ns.t_min, to_data=end is None)
        else:
            model = _strictly_decreasing(model)
        return (*map(float, model), float(final))

    def _end_time(self, end: float) -> float:
        lo, hi = self._end_range
        u = _clamp(end, 0.0, 1.0)
        if lo > 0:
            return float(math.exp(math.log(lo) + u * (math.log(hi) - math.log(lo))))
        return lo + u * (hi - lo)

    def _template(self, n: int, to_data: bool) -> list[Step]:
        factory, _ = BASELINES[self.spec.base_solver]
        return factory(n, to_data)

    def _step(self, gene: Gene, template: Step, k: int, n: int, to_data: bool, implicit: bool) -> Step:
        """Gene values for the free decisions, the template's otherwise, made legal at step k of n."""
        spec = self.spec
        last = k == n - 1
        prediction = gene.prediction if self.free("prediction") else template.prediction
        estimator = gene.estimator if self.free("estimator") else template.estimator
        order = gene.order if self.free("order") else template.order
        if self.free("corrector"):
            corrector = Corrector.IMPLICIT if implicit else (
                Corrector.PSEUDO if gene.corrector is not Corrector.NONE else Corrector.NONE)
        else:
            corrector = template.corrector
        if estimator is Estimator.IPNDM:
            order = max(1, min(order, k + 1, 4))
            return Step(Prediction.NOISE, order, default_derivatives(order), Corrector.NONE, Estimator.IPNDM)
        order = max(1, min(order, k + 1, max(spec.orders) if self.free("order") else 4))
        if last and to_data:
            order = 1
        if last:
            corrector = Corrector.NONE
        derivatives = self._derivatives(gene, template, order, k)
        return Step(prediction, order, derivatives, corrector, estimator)

    def _derivatives(self, gene: Gene, template: Step, order: int, k: int) -> tuple[Derivative, ...]:
        free_points, free_relax = self.free("derivatives"), self.free("relaxation")
        use_template = template.order == order and template.estimator is not Estimator.IPNDM
        out = []
        for d in range(1, order):
            default = Derivative(tuple(range(-1, -d - 1, -1)))
            base = template.derivatives[d - 1] if use_template else default
            points = _legal_points(gene.points[d - 1], d, k, self.spec.max_points) if free_points else base.active_points
            lo, hi = self.spec.relaxation
            relaxation = _clamp(gene.relaxations[d - 1], lo, hi) if free_relax else base.relaxation
            out.append(Derivative(points, relaxation))
        return tuple(out)

    # -- encoding ---------------------------------------------------------------------------

    def encode(self, schedule: Schedule) -> Genome:
        """The canonical genome of a schedule of this model (its times measured from the model's ends)."""
        ns = self.noise_schedule
        if schedule.time_domain != ns.time_domain:
            raise ScheduleError(f"time_domain: schedule is {schedule.time_domain!r}, the model's is {ns.time_domain!r}")
        times = list(schedule.timesteps)
        n = len(schedule.steps)
        lam = np.asarray(ns.lambda_(times[:n]), dtype=np.float64)
        lam[0] = self._lambda_start
        if schedule.ends_at_data:
            end = None
            bounds = np.concatenate([lam, [max(self._lambda_stop, lam[-1] + 1e-6)]])
        else:
            lo, hi = self._end_range
            t_end = _clamp(times[-1], lo, hi)
            end = (math.log(t_end / lo) / math.log(hi / lo)) if lo > 0 else (t_end - lo) / (hi - lo)
            bounds = np.concatenate([lam, [float(ns.lambda_(times[-1]))]])
        widths = np.maximum(np.diff(bounds), 1e-9)
        log_widths: list[float] = []
        genes: list[Gene] = []
        for k, step in enumerate(schedule.steps):
            gene = _gene_of(step)
            if step.corrector is Corrector.IMPLICIT:
                half = math.log(widths[k] / 2)
                log_widths += [half, half]
                genes += [gene, replace(gene, corrector=Corrector.NONE)]
            else:
                log_widths.append(math.log(widths[k]))
                genes.append(gene)
        analytic = schedule.analytic_first_step
        if analytic is not None and not self.free("analytic_first_step"):  # the first evaluation comes back
            analytic = None
            log_widths[0:2] = [math.log(math.exp(log_widths[0]) + math.exp(log_widths[1]))] if len(genes) > 1 \
                else log_widths[0:1]
            genes = genes[1:] if len(genes) > 1 else genes
        mean = float(np.mean(log_widths))
        centred = tuple(_clamp(w - mean, -LOG_WIDTH_RANGE, LOG_WIDTH_RANGE) for w in log_widths)
        nfe = len(genes) - (analytic is not None)
        return Genome(nfe, centred, tuple(genes), end, analytic)

    # -- random, mutation, crossover --------------------------------------------------------

    def random(self, rng: np.random.Generator, nfe: int | None = None) -> Genome:
        """A random genome (NFE drawn from the space when not given)."""
        spec = self.spec
        nfe = int(rng.choice(spec.nfe)) if nfe is None else nfe
        analytic = _choice(rng, spec.analytic) if self.free("analytic_first_step") else None
        slots = nfe + (analytic is not None)
        log_widths = tuple(float(v) for v in rng.normal(0.0, 0.5, size=slots))
        end = None
        if self.free("end_time") and rng.random() < 0.5:
            end = float(rng.random())
        genes = tuple(self._random_gene(rng, i) for i in range(slots))
        return Genome(nfe, log_widths, genes, end, analytic)

    def _random_gene(self, rng: np.random.Generator, slot: int) -> Gene:
        spec = self.spec
        prediction = _choice(rng, spec.predictions)
        estimators = [e for e in spec.estimators if e is not Estimator.IPNDM or prediction is Prediction.NOISE]
        estimator = _choice(rng, estimators or list(spec.estimators))
        weights = np.asarray(spec.order_weights, dtype=np.float64)
        order = int(rng.choice(spec.orders, p=weights / weights.sum()))
        points = tuple(self._random_points(rng, d, slot) for d in range(1, MAX_DERIVATIVES + 1))
        lo, hi = spec.relaxation
        relaxations = tuple(1.0 if rng.random() < 0.5 else float(rng.uniform(lo, hi)) for _ in range(MAX_DERIVATIVES))
        return Gene(prediction, order, estimator, points, relaxations, self._random_corrector(rng))

    def _random_points(self, rng: np.random.Generator, d: int, slot: int) -> tuple[int, ...]:
        window = max(d, min(self.spec.max_points, max(slot, d)))
        size = int(rng.integers(d, window + 1))
        return tuple(sorted((-int(p) for p in rng.choice(np.arange(1, window + 1), size=size, replace=False)),
                            reverse=True))

    def _random_corrector(self, rng: np.random.Generator) -> Corrector:
        options = list(self.spec.correctors)
        if Corrector.IMPLICIT in options and len(options) > 1:
            if rng.random() < self.spec.implicit_rate:
                return Corrector.IMPLICIT
            options.remove(Corrector.IMPLICIT)
        return _choice(rng, options)

    def mutate(self, genome: Genome, rng: np.random.Generator) -> Genome:
        """S³'s mutation: Gaussian noise on the times (when free), and every other free decision
        resampled at one step with ``mutation_rate``; at least one change."""
        rate = self.spec.mutation_rate
        operators = self._mutations(genome)
        times = [op for op in operators if op == self._mutate_times]
        others = [op for op in operators if op != self._mutate_times]
        chosen = times + [op for op in others if rng.random() < rate]
        if not chosen:
            chosen = [others[int(rng.integers(len(others)))]]
        for op in chosen:
            genome = op(genome, rng)
        return genome

    def _mutations(self, genome: Genome) -> list[Callable[[Genome, np.random.Generator], Genome]]:
        ops: list[Callable[[Genome, np.random.Generator], Genome]] = []
        if self.free("times"):
            ops.append(self._mutate_times)
        if self.free("end_time"):
            ops.append(self._mutate_end)
        for name in ("prediction", "order", "estimator", "derivatives", "relaxation", "corrector"):
            if self.free(name):
                ops.append(_gene_mutation(self, name))
        if self.free("analytic_first_step") and len(self.spec.analytic) > 1:
            ops.append(self._mutate_analytic)
        if len(self.spec.nfe) > 1:
            ops.append(self._mutate_nfe)
        if not ops:
            raise SpaceError("free: nothing is free to search")
        return ops

    def _mutate_times(self, genome: Genome, rng: np.random.Generator) -> Genome:
        sigma = self.spec.time_sigma
        noise = rng.normal(0.0, sigma, size=genome.slots) * (rng.random(genome.slots) < 0.5)
        if not noise.any():
            noise[int(rng.integers(genome.slots))] = rng.normal(0.0, sigma)
        widths = tuple(_clamp(w + z, -LOG_WIDTH_RANGE, LOG_WIDTH_RANGE) for w, z in zip(genome.log_widths, noise))
        return replace(genome, log_widths=widths)

    def _mutate_end(self, genome: Genome, rng: np.random.Generator) -> Genome:
        if genome.end is None or rng.random() < 0.2:
            return replace(genome, end=None if genome.end is not None else float(rng.random()))
        return replace(genome, end=_clamp(genome.end + rng.normal(0.0, 0.2), 0.0, 1.0))

    def _mutate_analytic(self, genome: Genome, rng: np.random.Generator) -> Genome:
        return self.with_analytic(genome, _choice(rng, [a for a in self.spec.analytic if a is not genome.analytic]), rng)

    def _mutate_nfe(self, genome: Genome, rng: np.random.Generator) -> Genome:
        options = [n for n in self.spec.nfe if abs(n - genome.nfe) == 1] or [n for n in self.spec.nfe if n != genome.nfe]
        nfe = int(_choice(rng, options))
        slots = nfe + (genome.analytic is not None and self.free("analytic_first_step"))
        return replace(_resize(genome, slots, rng, self), nfe=nfe)

    def with_nfe(self, genome: Genome, nfe: int, rng: np.random.Generator) -> Genome:
        """The genome with steps added (widest interval split) or removed until it makes ``nfe`` evaluations."""
        slots = nfe + (genome.analytic is not None and self.free("analytic_first_step"))
        return replace(_resize(genome, slots, rng, self), nfe=nfe)

    def with_analytic(self, genome: Genome, analytic: AnalyticFirstStep | None, rng: np.random.Generator) -> Genome:
        """The genome with another analytical first step (a slot added or removed, as its mutation does)."""
        if analytic not in self.spec.analytic or not self.free("analytic_first_step"):
            raise SpaceError(f"analytic: {analytic} is not free in this space")
        slots = genome.nfe + (analytic is not None)
        return replace(_resize(genome, slots, rng, self), analytic=analytic)

    def crossover(self, a: Genome, b: Genome, rng: np.random.Generator) -> Genome:
        """S³ crossover: each key (times, end, each decision) from ``b`` with p = ½, then each slot's gene with p = ½."""
        child = a
        if self.free("times") and a.slots == b.slots and rng.random() < 0.5:
            child = replace(child, log_widths=b.log_widths)
        if self.free("end_time") and rng.random() < 0.5:
            child = replace(child, end=b.end)
        genes = list(child.genes)
        fields = [f for f in ("prediction", "order", "estimator", "derivatives", "relaxation", "corrector") if self.free(f)]
        for name in fields:
            if rng.random() < 0.5:
                genes = [_with_field(g, b.genes[i], name) if i < b.slots else g for i, g in enumerate(genes)]
        for i in range(min(len(genes), b.slots)):
            if rng.random() < 0.5:
                genes[i] = b.genes[i]
        return replace(child, genes=tuple(genes))

    # -- Optuna ----------------------------------------------------------------------------

    def suggest(self, trial: Any) -> Genome:
        """Ask an Optuna trial for a genome (define-by-run; floats for times, categoricals for decisions)."""
        spec = self.spec
        nfe = spec.nfe[0] if len(spec.nfe) == 1 else int(trial.suggest_categorical("nfe", list(spec.nfe)))
        analytic = None
        if self.free("analytic_first_step") and len(spec.analytic) > 1:
            names = [_analytic_name(a) for a in spec.analytic]
            analytic = _analytic_value(trial.suggest_categorical("analytic", names))
        elif self.free("analytic_first_step"):
            analytic = spec.analytic[0]
        slots = nfe + (analytic is not None)
        log_widths = tuple(
            trial.suggest_float(f"w{i}", -LOG_WIDTH_RANGE, LOG_WIDTH_RANGE) if self.free("times") else 0.0
            for i in range(slots)
        )
        end = None
        if self.free("end_time") and trial.suggest_categorical("end_at_data", [True, False]) is False:
            end = trial.suggest_float("end", 0.0, 1.0)
        genes = tuple(self._suggest_gene(trial, i) for i in range(slots))
        return Genome(nfe, log_widths, genes, end, analytic)

    def _suggest_gene(self, trial: Any, i: int) -> Gene:
        spec = self.spec
        default = Gene(Prediction.DATA, 1, Estimator.TAYLOR, _default_points(), (1.0,) * MAX_DERIVATIVES,
                       Corrector.NONE)
        prediction = Prediction(trial.suggest_categorical(f"pred{i}", [p.value for p in spec.predictions])) \
            if self.free("prediction") else default.prediction
        estimator = Estimator(trial.suggest_categorical(f"est{i}", [e.value for e in spec.estimators])) \
            if self.free("estimator") else default.estimator
        order = int(trial.suggest_categorical(f"order{i}", list(spec.orders))) if self.free("order") else 4
        corrector = Corrector(trial.suggest_categorical(f"corr{i}", [c.value for c in spec.correctors])) \
            if self.free("corrector") else default.corrector
        points, relaxations = list(default.points), list(default.relaxations)
        lo, hi = spec.relaxation
        for d in range(1, MAX_DERIVATIVES + 1):  # every slot asks the same parameters: a fixed space
            if self.free("derivatives"):
                choices = _point_choices(d, min(i, spec.max_points))
                points[d - 1] = _parse_points(trial.suggest_categorical(f"pts{i}_{d}", choices))
            if self.free("relaxation"):
                relaxations[d - 1] = trial.suggest_float(f"relax{i}_{d}", lo, hi)
        return Gene(prediction, order, estimator, tuple(points), tuple(relaxations), corrector)


    def optuna_params(self, genome: Genome) -> tuple[dict[str, Any], dict[str, Any]] | None:
        """The parameters ``suggest`` would have asked for ``genome`` (to tell Optuna about schedules it did
        not propose, such as baselines): (params, distributions), or None when not representable."""
        from optuna.distributions import CategoricalDistribution, FloatDistribution

        spec = self.spec
        params: dict[str, Any] = {}
        dists: dict[str, Any] = {}

        def put(name: str, value: Any, dist: Any) -> bool:
            if isinstance(dist, CategoricalDistribution) and value not in dist.choices:
                return False
            params[name], dists[name] = value, dist
            return True

        if len(spec.nfe) > 1 and not put("nfe", genome.nfe, CategoricalDistribution(list(spec.nfe))):
            return None
        analytic = genome.analytic if self.free("analytic_first_step") else None
        if self.free("analytic_first_step") and len(spec.analytic) > 1:
            names = [_analytic_name(a) for a in spec.analytic]
            if not put("analytic", _analytic_name(analytic), CategoricalDistribution(names)):
                return None
        if genome.slots != genome.nfe + (analytic is not None):
            return None
        if self.free("times"):
            for i, w in enumerate(genome.log_widths):
                put(f"w{i}", _clamp(w, -LOG_WIDTH_RANGE, LOG_WIDTH_RANGE),
                    FloatDistribution(-LOG_WIDTH_RANGE, LOG_WIDTH_RANGE))
        if self.free("end_time"):
            put("end_at_data", genome.end is None, CategoricalDistribution([True, False]))
            if genome.end is not None:
                put("end", _clamp(genome.end, 0.0, 1.0), FloatDistribution(0.0, 1.0))
        lo, hi = spec.relaxation
        for i, gene in enumerate(genome.genes):
            ok = True
            if self.free("prediction"):
                ok &= put(f"pred{i}", gene.prediction.value, CategoricalDistribution([p.value for p in spec.predictions]))
            if self.free("estimator"):
                ok &= put(f"est{i}", gene.estimator.value, CategoricalDistribution([e.value for e in spec.estimators]))
            order = gene.order
            if self.free("order"):
                order = min(spec.orders, key=lambda o: (abs(o - gene.order), o))
                put(f"order{i}", order, CategoricalDistribution(list(spec.orders)))
            else:
                order = 4
            if self.free("corrector"):
                ok &= put(f"corr{i}", gene.corrector.value, CategoricalDistribution([c.value for c in spec.correctors]))
            for d in range(1, MAX_DERIVATIVES + 1):
                if self.free("derivatives"):
                    window = min(i, spec.max_points)
                    legal = _legal_points(gene.points[d - 1], d, max(i, d), spec.max_points)
                    points = ",".join(map(str, sorted(legal, reverse=True)))
                    ok &= put(f"pts{i}_{d}", points, CategoricalDistribution(_point_choices(d, window)))
                if self.free("relaxation"):
                    put(f"relax{i}_{d}", _clamp(gene.relaxations[d - 1], lo, hi), FloatDistribution(lo, hi))
            if not ok:
                return None
        return params, dists


# -- helpers ---------------------------------------------------------------------------------


def _clamp(x: float, lo: float, hi: float) -> float:
    """``x`` clipped into [lo, hi] (as ``np.clip``, for one number without its cost)."""
    return float(min(max(x, lo), hi))


def _choice(rng: np.random.Generator, options: Sequence[Any]) -> Any:
    return options[int(rng.integers(len(options)))]


def _default_points() -> tuple[tuple[int, ...], ...]:
    return tuple(tuple(range(-1, -d - 1, -1)) for d in range(1, MAX_DERIVATIVES + 1))


def _gene_of(step: Step) -> Gene:
    points = list(_default_points())
    relax = [1.0] * MAX_DERIVATIVES
    for d, der in enumerate(step.derivatives):
        points[d], relax[d] = tuple(der.active_points), float(der.relaxation)
    return Gene(step.prediction, step.order, step.estimator, tuple(points), tuple(relax), step.corrector)


def _legal_points(points: Sequence[int], d: int, k: int, max_points: int) -> tuple[int, ...]:
    """Points −1…−min(k, max_points) from ``points`` (order kept), topped up with the most recent ones to d."""
    window = min(k, max_points)
    out = [p for p in dict.fromkeys(points) if -window <= p <= -1]
    for p in range(-1, -window - 1, -1):
        if len(out) >= d:
            break
        if p not in out:
            out.append(p)
    if len(out) < d:  # fewer earlier points than the derivative needs: the most recent ones
        out = list(range(-1, -d - 1, -1))
    return tuple(out)


def _point_choices(d: int, window: int) -> list[str]:
    window = max(window, d)
    return [",".join(map(str, c)) for size in range(d, window + 1)
            for c in combinations(range(-1, -window - 1, -1), size)]


def _parse_points(text: str) -> tuple[int, ...]:
    return tuple(int(v) for v in text.split(","))


def _analytic_name(a: AnalyticFirstStep | None) -> str:
    return "none" if a is None else a.value


def _analytic_value(name: str) -> AnalyticFirstStep | None:
    return None if name == "none" else AnalyticFirstStep(name)


def _with_field(gene: Gene, other: Gene, name: str) -> Gene:
    attr = {"derivatives": "points", "relaxation": "relaxations"}.get(name, name)
    return replace(gene, **{attr: getattr(other, attr)})


def _gene_mutation(space: SearchSpace, name: str) -> Callable[[Genome, np.random.Generator], Genome]:
    """Resample decision ``name`` at one random slot."""

    def mutate(genome: Genome, rng: np.random.Generator) -> Genome:
        i = int(rng.integers(genome.slots))
        fresh = space._random_gene(rng, i)
        genes = list(genome.genes)
        if name == "estimator" and fresh.estimator is Estimator.IPNDM:
            fresh = replace(fresh, prediction=Prediction.NOISE)
            genes[i] = replace(genes[i], prediction=Prediction.NOISE)
        genes[i] = _with_field(genes[i], fresh, name)
        return replace(genome, genes=tuple(genes))

    return mutate


def _resize(genome: Genome, slots: int, rng: np.random.Generator, space: SearchSpace) -> Genome:
    """Add slots (splitting the widest) or remove slots (merging into a neighbour) to reach ``slots``."""
    widths = list(genome.log_widths)
    genes = list(genome.genes)
    while len(genes) < slots:
        i = int(np.argmax(widths))
        half = widths[i] - math.log(2)
        widths[i:i + 1] = [half, half]
        genes.insert(i + 1, replace(genes[i], corrector=Corrector.NONE) if rng.random() < 0.5
                     else space._random_gene(rng, i + 1))
    while len(genes) > slots and len(genes) > 1:
        i = int(rng.integers(1, len(genes))) if len(genes) > 1 else 0
        merged = math.log(math.exp(widths[i - 1]) + math.exp(widths[i]))
        widths[i - 1:i + 1] = [_clamp(merged, -LOG_WIDTH_RANGE, LOG_WIDTH_RANGE)]
        del genes[i]
    return replace(genome, log_widths=tuple(widths), genes=tuple(genes))


def _strictly_decreasing(model: np.ndarray) -> np.ndarray:
    """Continuous times: guard against equal neighbours from λ round trips (widths are bounded below)."""
    out = model.copy()
    for k in range(1, out.size):
        if not out[k] < out[k - 1]:
            out[k] = np.nextafter(out[k - 1], -np.inf)
    return out


def _distinct_integers(model: np.ndarray, final: float, t_min: float, to_data: bool) -> tuple[np.ndarray, float]:
    """Integer timesteps: rounded, strictly decreasing, above the final time."""
    out = np.round(model).astype(np.float64)
    final = float(final) if to_data else float(round(final))
    lowest = max(t_min, final + 1) if not to_data else t_min
    n = out.size
    for k in range(1, n):
        out[k] = min(out[k], out[k - 1] - 1)
    for k in range(n - 1, 0, -1):  # lift the tail back above the floor, keeping the gaps
        need = lowest + (n - 1 - k)
        if out[k] < need:
            out[k] = need
    return out, final
