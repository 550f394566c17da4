"""The bundled 8×8 digits data (scikit-learn's ``load_digits``) and its fixed split.

Pixels 0…16 are mapped to [−1, 1]. The split is seeded and fixed so that the model,
the classifier and the reference statistics all agree on which images are held out.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ASSETS = Path(__file__).parent / "assets"
DIGITS_MODEL_DIR = ASSETS / "digits"
NUM_CLASSES = 10
SPLIT_SEED = 20240601
HELD_OUT_FRACTION = 0.2


@dataclass(frozen=True)
class DigitsData:
    """Images (N, 1, 8, 8) in [−1, 1] and labels (N,) of one split."""

    images: torch.Tensor
    labels: torch.Tensor

    def __len__(self) -> int:
        return int(self.labels.numel())


def to_unit_range(pixels: np.ndarray) -> torch.Tensor:
    """sklearn digits pixels (0…16) → float32 in [−1, 1], shape (N, 1, 8, 8)."""
    return torch.from_numpy(np.asarray(pixels, dtype=np.float32).reshape(-1, 1, 8, 8) / 8.0 - 1.0)


def load_digits_split() -> tuple[DigitsData, DigitsData]:
    """(train, held-out) splits of the 1,797 digits, stratified by class, fixed seed."""
    from sklearn.datasets import load_digits

    data = load_digits()
    rng = np.random.default_rng(SPLIT_SEED)
    held = np.zeros(len(data.target), dtype=bool)
    for c in range(NUM_CLASSES):
        idx = np.flatnonzero(data.target == c)
        held[rng.choice(idx, size=int(round(HELD_OUT_FRACTION * idx.size)), replace=False)] = True
    images, labels = to_unit_range(data.data), torch.from_numpy(data.target.astype(np.int64))
    train = DigitsData(images[~held], labels[~held])
    test = DigitsData(images[held], labels[held])
    return train, test


class DigitsClassifier(torch.nn.Module):
    """A small CNN on 8×8 digits in [−1, 1]; ``features`` is its 128-d penultimate layer."""

    FEATURE_DIM = 128

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(
            nn.Conv2d(1, 32, 3, padding=1), nn.GELU(),
            nn.Conv2d(32, 64, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Conv2d(64, 64, 3, padding=1), nn.GELU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(64 * 2 * 2, self.FEATURE_DIM), nn.GELU(),
        )
        self.head = nn.Linear(self.FEATURE_DIM, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


class IndependentDigitsClassifier(torch.nn.Module):
    """A second digits classifier, another architecture trained from another seed: its 64-d
    penultimate features give a FID the search never optimises (to tell real gains from gains
    fitted to one feature space)."""

    FEATURE_DIM = 64

    def __init__(self) -> None:
        super().__init__()
        nn = torch.nn
        self.body = nn.Sequential(
            nn.Conv2d(1, 24, 5, padding=2), nn.SiLU(), nn.AvgPool2d(2),
            nn.Conv2d(24, 48, 3, padding=1), nn.SiLU(),
            nn.Flatten(), nn.Linear(48 * 4 * 4, 256), nn.SiLU(), nn.Linear(256, self.FEATURE_DIM), nn.Tanh(),
        )
        self.head = nn.Linear(self.FEATURE_DIM, NUM_CLASSES)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        return self.body(x)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.body(x))


CLASSIFIER_WEIGHTS = ASSETS / "digits_classifier.safetensors"
INDEPENDENT_CLASSIFIER_WEIGHTS = ASSETS / "digits_classifier_b.safetensors"
CLASSIFIERS: dict[str, tuple[type[torch.nn.Module], Path]] = {
    "a": (DigitsClassifier, CLASSIFIER_WEIGHTS),
    "b": (IndependentDigitsClassifier, INDEPENDENT_CLASSIFIER_WEIGHTS),
}


def load_digits_classifier(device: str | torch.device = "cpu", variant: str = "a") -> torch.nn.Module:
    """A bundled classifier in eval mode: ``a`` (the FID extractor), ``b`` (the independent one)."""
    from safetensors.torch import load_file

    cls, weights = CLASSIFIERS[variant]
    model = cls()
    model.load_state_dict(load_file(str(weights)))
    return model.to(device).eval().requires_grad_(False)
