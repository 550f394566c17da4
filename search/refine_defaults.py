"""Refinement's default settings, in one torch-free place: search configs, ``schedsearch refine`` (whose
parser is built for every command) and :class:`~schedsearch.search.refine.RefineSettings` share them.

Measured on digits at NFE 5 and the 8-D mixture (benchmarks/refine.py): Adam's first rates on the time
logits and on relaxations and free weights, the steps, and the patience (validations, every 10 steps,
without a better iterate before the steps are cut).
"""

from __future__ import annotations

from typing import Any, Literal, get_args

#: the training noise's seed: apart from the search noise (0) and the held-out noise (1) by default
TRAIN_SEED = 2

#: what refinement may learn (all of it by default)
LEARNABLE = ("times", "relaxations", "free_weights", "model_times")

#: the data-space distance to the teacher, per draw and averaged over draws: ``euclidean`` (the norm of the
#: difference) or ``squared`` (its square, i.e. the mean squared error)
Distance = Literal["euclidean", "squared"]
DISTANCES: tuple[str, ...] = get_args(Distance)

REFINE_DEFAULTS: dict[str, Any] = {"iterations": 250, "samples": 600, "batch_size": 100, "seed": TRAIN_SEED,
                                   "lr_times": 0.1, "lr_coefficients": 0.01, "patience": 4,
                                   "distance": "euclidean"}
