"""``Predictor``: fit on measured schedules with a ranking loss, rank new ones, save and load as bytes.

Training targets are ranks, not values: a schedule's objective is replaced by its rank
among the training trials (scaled to [0, 1]), and the loss is a pairwise hinge on pairs
whose ranks differ by more than ``min_gap`` (OMS-DPM/S³ use pairs with |ΔFID| > 0.25; ranks
make that threshold independent of the metric's scale), plus a small regression term on
the ranks. Order matters, not absolute values.

An ensemble of ``ensemble`` networks (different initialisations, their own pairs), each
trained alone; a schedule's score is the mean of the networks' scores, each standardised by
its scores on the training set (so no network dominates by scale, and a schedule's score never
depends on what else is in the batch). On 2,000 digits search trials five networks rank
held-out trials at τ 0.714 against 0.697 for one (``benchmarks/predictor.py``; 64 hidden units
rank as well as 128 there, 0.714 vs 0.717, at a quarter of the cost).

With ``probe`` (the default) each step's features include the schedule's error on Gaussian data
(:mod:`.probe`), the sampler's own recursion run for the whole batch at once; it is what lifts the
ranking most (one network 0.629 → 0.697 on the same digits trials). One network ranks 10,000 new
candidates in about 0.4 s on the 2-core CPU, encoding included (``benchmarks/predictor.py --sections speed``).

Given the model's measured ``spectrum`` (:mod:`.spectrum`), each step's features also include its errors on
the model's own sensitivity curves: one network 0.697 → 0.733, five 0.714 → 0.754 on the same trials.

Everything random draws from the injected generator; the checkpoint is safetensors bytes plus
JSON-able metadata (no pickles). Format /2 holds the ensemble (its config says whether it reads
probe rows; /2 checkpoints written before the probe read none) and the spectrum it reads, if any; /1
checkpoints (one network) still load.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors
from schedsearch.solvers import NoiseSchedule, Schedule

from .encoding import EncodedBatch, encode
from .model import ScheduleScorer
from .spectrum import ModelSpectrum

FORMAT = "schedsearch.predictor/2"
_FORMAT_1 = "schedsearch.predictor/1"  # one network, no standardisation: still loads


@dataclass(frozen=True)
class PredictorConfig:
    kind: str = "pool"
    hidden: int = 64
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-4
    pairs: int = 512  # pairs per optimisation step
    margin: float = 0.1
    min_gap: float = 0.02  # pairs closer than this in rank carry no signal
    regression: float = 0.1  # weight of the rank-regression term
    ensemble: int = 5  # networks averaged
    probe: bool = True  # step rows carry the schedule's errors on Gaussian data (predictors/probe.py)

    def __post_init__(self) -> None:
        if self.ensemble < 1:
            raise ValueError(f"predictor ensemble: {self.ensemble} networks, expected at least 1")


@dataclass
class FitReport:
    trials: int
    kendall_tau_train: float
    loss_history: list[float] = field(default_factory=list)


def kendall_tau(a: Sequence[float] | np.ndarray, b: Sequence[float] | np.ndarray) -> float:
    """Kendall's τ-b between two rankings (NaN when either is constant)."""
    from scipy.stats import kendalltau

    if len(a) < 2:
        return math.nan
    return float(kendalltau(np.asarray(a), np.asarray(b)).statistic)


@contextmanager
def _one_thread() -> Iterator[None]:
    """Run the (tiny) network on one CPU thread, restoring the caller's setting after: its matrices are far
    too small to gain from more, and intra-op threads spinning beside a busy sampler cost 5-20x."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def _ranks(values: np.ndarray) -> np.ndarray:
    order = np.argsort(values, kind="stable")
    ranks = np.empty(len(values), dtype=np.float64)
    ranks[order] = np.arange(len(values))
    return ranks / max(1, len(values) - 1)


class Predictor:
    """Ranks schedules of one model (its noise schedule) and guidance scale by predicted objective."""

    def __init__(self, noise_schedule: NoiseSchedule, config: PredictorConfig | None = None,
                 guidance_scale: float | None = None, seed: int = 0, spectrum: ModelSpectrum | None = None) -> None:
        self.noise_schedule = noise_schedule
        self.config = config or PredictorConfig()
        self.guidance_scale = guidance_scale
        self.seed = seed
        self.spectrum = spectrum
        width = 0 if spectrum is None else spectrum.width
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.nets = torch.nn.ModuleList(ScheduleScorer(self.config.kind, self.config.hidden, self.config.probe,
                                                           width) for _ in range(self.config.ensemble))
        # per network: (mean, std) of its scores on its training set, set by fit
        self._set_scale(torch.zeros(self.config.ensemble), torch.ones(self.config.ensemble))
        self.trained_on = 0

    def _set_scale(self, mean: torch.Tensor, std: torch.Tensor) -> None:
        self.score_mean, self.score_std = mean.double(), std.double()

    def _encode(self, schedules: Sequence[Schedule]) -> EncodedBatch:
        return encode(schedules, self.noise_schedule, self.guidance_scale, self.config.probe, self.spectrum)

    def fit(self, schedules: Sequence[Schedule], objectives: Sequence[float], generator: torch.Generator,
            epochs: int | None = None) -> FitReport:
        """Train (or continue training) on measured ``schedules``; lower objective = better."""
        if len(schedules) != len(objectives) or len(schedules) < 2:
            raise ValueError("predictor fit: at least two schedules, one objective each")
        with _one_thread():
            return self._fit(schedules, objectives, generator, epochs)

    def _fit(self, schedules: Sequence[Schedule], objectives: Sequence[float], generator: torch.Generator,
             epochs: int | None) -> FitReport:
        batch = self._encode(schedules)
        ranks = torch.from_numpy(_ranks(np.asarray(objectives, dtype=np.float64))).float()
        steps = epochs or self.config.epochs
        history = np.zeros(steps)
        means, stds = [], []
        for net in self.nets:
            history += self._fit_one(net, batch, ranks, generator, steps)
            with torch.no_grad():
                train_scores = net(batch).double()  # at least two (fit checks)
            means.append(train_scores.mean())
            stds.append(train_scores.std().clamp(min=1e-6))
        self._set_scale(torch.stack(means), torch.stack(stds))
        self.trained_on += len(schedules)
        tau = kendall_tau(self.predict(schedules), objectives)
        return FitReport(len(schedules), tau, (history / len(self.nets)).tolist())

    def _fit_one(self, net: ScheduleScorer, batch: EncodedBatch, ranks: torch.Tensor, generator: torch.Generator,
                 epochs: int) -> list[float]:
        cfg = self.config
        opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        n = len(ranks)
        history: list[float] = []
        net.train()
        for _ in range(epochs):
            i = torch.randint(n, (cfg.pairs,), generator=generator)
            j = torch.randint(n, (cfg.pairs,), generator=generator)
            gap = ranks[j] - ranks[i]
            keep = gap.abs() > cfg.min_gap
            scores = net(batch)
            sign = torch.sign(gap[keep])  # +1: i is better, so s_i should sit below s_j by the margin
            hinge = torch.relu(cfg.margin - sign * (scores[j[keep]] - scores[i[keep]])).mean() if keep.any() \
                else scores.sum() * 0
            loss = hinge + cfg.regression * ((scores - (ranks - 0.5)) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
        net.eval()
        return history

    @torch.no_grad()
    def predict(self, schedules: Sequence[Schedule], batch_size: int = 4096) -> np.ndarray:
        """Predicted scores (lower = better; only their order means something)."""
        self.nets.eval()
        out = []
        with _one_thread():
            for k in range(0, len(schedules), batch_size):
                batch = self._encode(schedules[k: k + batch_size])
                scores = torch.stack([net(batch).double() for net in self.nets], 1)
                out.append(((scores - self.score_mean) / self.score_std).mean(1).numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float64)

    # -- checkpoints ----------------------------------------------------------------------------

    def to_bytes(self) -> tuple[bytes, dict[str, Any]]:
        """The weights (safetensors) and the metadata needed to rebuild the predictor."""
        tensors = {k: v.contiguous() for k, v in self.nets.state_dict().items()}
        tensors.update(score_mean=self.score_mean.contiguous(), score_std=self.score_std.contiguous())
        weights = save_tensors(tensors)
        meta = {"format": FORMAT, "config": asdict(self.config), "guidance_scale": self.guidance_scale,
                "seed": self.seed, "trained_on": self.trained_on, "noise_schedule": self.noise_schedule.spec(),
                "spectrum": None if self.spectrum is None else self.spectrum.to_dict()}
        return weights, meta

    @classmethod
    def from_bytes(cls, weights: bytes, meta: dict[str, Any], noise_schedule: NoiseSchedule) -> Predictor:
        fmt = meta.get("format")
        if fmt not in (FORMAT, _FORMAT_1):
            raise ValueError(f"predictor checkpoint: format {fmt!r}, expected {FORMAT!r}")
        config = {"probe": False, **meta["config"]}  # checkpoints from before the probe read no probe rows
        tensors = load_tensors(weights)
        if fmt == _FORMAT_1:  # one network, its raw scores
            config["ensemble"] = 1
            tensors = {f"0.{k}": v for k, v in tensors.items()}
            tensors.update(score_mean=torch.zeros(1, dtype=torch.float64), score_std=torch.ones(1, dtype=torch.float64))
        spectrum = meta.get("spectrum")
        out = cls(noise_schedule, PredictorConfig(**config), meta.get("guidance_scale"), int(meta["seed"]),
                  None if spectrum is None else ModelSpectrum.from_dict(spectrum))
        out._set_scale(tensors.pop("score_mean"), tensors.pop("score_std"))
        out.nets.load_state_dict(tensors)
        out.trained_on = int(meta.get("trained_on", 0))
        return out


