"""Random search: independent draws from the space (the baseline every strategy must beat)."""

from __future__ import annotations

from collections.abc import Sequence

from .base import Observation, Proposal, Strategy


class RandomSearch(Strategy):
    name = "random"

    def ask(self, n: int) -> list[Proposal]:
        return [Proposal(self.space.decode(self.space.random(self.rng)), {"op": "random"}) for _ in range(n)]

    def tell(self, observations: Sequence[Observation]) -> None:
        pass
