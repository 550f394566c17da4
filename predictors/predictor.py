"""``Predictor``: fit on measured schedules with a ranking loss, rank new ones, save and load as bytes.

Training targets are ranks, not values: a schedule's objective is replaced by its rank
among the training trials (scaled to [0, 1]), and the loss is a pairwise hinge on pairs
whose ranks differ by more than ``min_gap`` (OMS-DPM/S³ use pairs with |ΔFID| > 0.25; ranks
make that threshold independent of the metric's scale), plus a small regression term on
the ranks. Order matters, not absolute values. Everything random draws from the injected
generator; the checkpoint is safetensors bytes plus JSON-able metadata (no pickles).
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

FORMAT = "schedsearch.predictor/1"


@dataclass(frozen=True)
class PredictorConfig:
    kind: str = "pool"
    hidden: int = 128
    epochs: int = 300
    lr: float = 1e-3
    weight_decay: float = 1e-4
    pairs: int = 512  # pairs per optimisation step
    margin: float = 0.1
    min_gap: float = 0.02  # pairs closer than this in rank carry no signal
    regression: float = 0.1  # weight of the rank-regression term


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
                 guidance_scale: float | None = None, seed: int = 0) -> None:
        self.noise_schedule = noise_schedule
        self.config = config or PredictorConfig()
        self.guidance_scale = guidance_scale
        self.seed = seed
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            self.net = ScheduleScorer(self.config.kind, self.config.hidden)
        self.trained_on = 0

    def _encode(self, schedules: Sequence[Schedule]) -> EncodedBatch:
        return encode(schedules, self.noise_schedule, self.guidance_scale)

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
        cfg = self.config
        opt = torch.optim.AdamW(self.net.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        n = len(schedules)
        history: list[float] = []
        self.net.train()
        for _ in range(epochs or cfg.epochs):
            i = torch.randint(n, (cfg.pairs,), generator=generator)
            j = torch.randint(n, (cfg.pairs,), generator=generator)
            gap = ranks[j] - ranks[i]
            keep = gap.abs() > cfg.min_gap
            scores = self.net(batch)
            sign = torch.sign(gap[keep])  # +1: i is better, so s_i should sit below s_j by the margin
            hinge = torch.relu(cfg.margin - sign * (scores[j[keep]] - scores[i[keep]])).mean() if keep.any() \
                else scores.sum() * 0
            loss = hinge + cfg.regression * ((scores - (ranks - 0.5)) ** 2).mean()
            opt.zero_grad()
            loss.backward()
            opt.step()
            history.append(float(loss.detach()))
        self.net.eval()
        self.trained_on += n
        tau = kendall_tau(self.predict(schedules), objectives)
        return FitReport(n, tau, history)

    @torch.no_grad()
    def predict(self, schedules: Sequence[Schedule], batch_size: int = 4096) -> np.ndarray:
        """Predicted scores (lower = better; only their order means something)."""
        self.net.eval()
        out = []
        with _one_thread():
            for k in range(0, len(schedules), batch_size):
                out.append(self.net(self._encode(schedules[k: k + batch_size])).numpy())
        return np.concatenate(out) if out else np.zeros(0, dtype=np.float32)

    # -- checkpoints ----------------------------------------------------------------------------

    def to_bytes(self) -> tuple[bytes, dict[str, Any]]:
        """The weights (safetensors) and the metadata needed to rebuild the predictor."""
        weights = save_tensors({k: v.contiguous() for k, v in self.net.state_dict().items()})
        meta = {"format": FORMAT, "config": asdict(self.config), "guidance_scale": self.guidance_scale,
                "seed": self.seed, "trained_on": self.trained_on, "noise_schedule": self.noise_schedule.spec()}
        return weights, meta

    @classmethod
    def from_bytes(cls, weights: bytes, meta: dict[str, Any], noise_schedule: NoiseSchedule) -> Predictor:
        if meta.get("format") != FORMAT:
            raise ValueError(f"predictor checkpoint: format {meta.get('format')!r}, expected {FORMAT!r}")
        out = cls(noise_schedule, PredictorConfig(**meta["config"]), meta.get("guidance_scale"), int(meta["seed"]))
        out.net.load_state_dict(load_tensors(weights))
        out.trained_on = int(meta.get("trained_on", 0))
        return out


