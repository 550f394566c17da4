"""The fixed set of initial noises (and labels) every schedule is measured on."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import torch


@dataclass(frozen=True, eq=False)
class NoiseSet:
    """Initial noises x_T (N, *shape) and class labels (N,) or None, drawn from ``seed``.

    Smaller fidelities use the first n draws, so every level shares its draws with the
    levels above it. Heads and the fingerprint are computed once per set.
    """

    noise: torch.Tensor
    labels: torch.Tensor | None
    seed: int
    #: the set this one is the head of (None: a full set)
    root: NoiseSet | None = field(default=None, repr=False)
    _heads: dict[int, NoiseSet] = field(default_factory=dict, init=False, repr=False)

    @classmethod
    def draw(
        cls,
        sample_shape: tuple[int, ...],
        n: int,
        seed: int,
        num_classes: int | None = None,
        dtype: torch.dtype = torch.float32,
    ) -> NoiseSet:
        g = torch.Generator().manual_seed(seed)
        noise = torch.randn((n, *sample_shape), generator=g, dtype=dtype)
        labels = None if not num_classes else torch.arange(n) % num_classes
        return cls(noise, labels, seed)

    def __len__(self) -> int:
        return int(self.noise.shape[0])

    def head(self, n: int) -> NoiseSet:
        if n > len(self):
            raise ValueError(f"noise set has {len(self)} draws, {n} requested")
        if n == len(self):
            return self
        if n not in self._heads:
            root = self.root or self
            self._heads[n] = NoiseSet(self.noise[:n], None if self.labels is None else self.labels[:n], self.seed,
                                      root)
        return self._heads[n]

    @cached_property
    def fingerprint(self) -> str:
        """Content hash of the noises and labels (keys cached reference solutions)."""
        h = hashlib.sha256(self.noise.contiguous().cpu().numpy().tobytes())
        if self.labels is not None:
            h.update(self.labels.contiguous().cpu().numpy().tobytes())
        return h.hexdigest()[:24]

    def save(self, path: Path) -> None:
        torch.save({"noise": self.noise, "labels": self.labels, "seed": self.seed}, path)

    @classmethod
    def load(cls, path: Path) -> NoiseSet:
        data = torch.load(path, map_location="cpu", weights_only=True)
        return cls(data["noise"], data["labels"], int(data["seed"]))
