"""The scoring network: encoded schedule → one scalar (lower = better).

Two shapes, chosen by measurement (``benchmarks/predictor.py``): ``pool`` — a per-step MLP,
masked mean and max over the steps, the globals, an MLP head; ``lstm`` — OMS-DPM/S³'s
design, a one-layer LSTM over the steps whose last real state meets the globals in the head.
"""

from __future__ import annotations

import torch
from torch import nn

from .encoding import GLOBAL_FEATURES, EncodedBatch, step_width
from .kinds import KINDS


class ScheduleScorer(nn.Module):
    def __init__(self, kind: str = "pool", hidden: int = 64, probe: bool = False, spectrum: int = 0) -> None:
        super().__init__()
        width_in = step_width(probe, spectrum)
        if kind not in KINDS:
            raise ValueError(f"predictor kind: unknown {kind!r} (known: {', '.join(KINDS)})")
        self.kind = kind
        if kind == "pool":
            self.step = nn.Sequential(nn.Linear(width_in, hidden), nn.SiLU(), nn.Linear(hidden, hidden), nn.SiLU())
            width = 2 * hidden
        else:
            self.step = nn.Sequential(nn.Linear(width_in, hidden), nn.SiLU())
            self.lstm = nn.LSTM(hidden, hidden, batch_first=True)
            width = hidden
        self.head = nn.Sequential(nn.Linear(width + GLOBAL_FEATURES, hidden), nn.SiLU(), nn.Linear(hidden, hidden),
                                  nn.SiLU(), nn.Linear(hidden, 1))

    def forward(self, batch: EncodedBatch) -> torch.Tensor:
        h = self.step(batch.steps)
        mask = batch.mask.unsqueeze(-1)
        if self.kind == "pool":
            count = mask.sum(1).clamp(min=1)
            mean = (h * mask).sum(1) / count
            peak = h.masked_fill(~mask, float("-inf")).amax(1)
            pooled = torch.cat([mean, torch.where(torch.isfinite(peak), peak, torch.zeros_like(peak))], -1)
        else:
            out, _ = self.lstm(h)
            last = (batch.mask.sum(1) - 1).clamp(min=0)
            pooled = out[torch.arange(out.shape[0]), last]
        return self.head(torch.cat([pooled, batch.globals], -1)).squeeze(-1)
