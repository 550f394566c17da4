"""Train the bundled digits classifier (feature extractor for FID/KID on digits).

    .venv/bin/python -m schedsearch.solvers.train_classifier               # the FID extractor
    .venv/bin/python -m schedsearch.solvers.train_classifier --variant b   # the independent one

Trained on the training split with light augmentation (±1 pixel shifts, small
intensity noise); reports held-out accuracy and writes ``assets/digits_classifier.safetensors``.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
import torch.nn.functional as F

from .digits import CLASSIFIERS, load_digits_split


def _augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    shifts = torch.randint(-1, 2, (2,), generator=g)
    x = torch.roll(x, shifts=(int(shifts[0]), int(shifts[1])), dims=(2, 3))
    return x + 0.1 * torch.randn(x.shape, generator=g)


def train(epochs: int, seed: int, out: Path, variant: str = "a") -> float:
    from safetensors.torch import save_file

    torch.manual_seed(seed)  # layer initialisation uses the global generator
    g = torch.Generator().manual_seed(seed)
    train_set, test_set = load_digits_split()
    model = CLASSIFIERS[variant][0]()
    opt = torch.optim.AdamW(model.parameters(), lr=2e-3, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.CosineAnnealingLR(opt, epochs)
    for _ in range(epochs):
        model.train()
        perm = torch.randperm(len(train_set), generator=g)
        for idx in perm.split(64):
            loss = F.cross_entropy(model(_augment(train_set.images[idx], g)), train_set.labels[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
        sched.step()
    model.eval()
    with torch.no_grad():
        accuracy = float((model(test_set.images).argmax(1) == test_set.labels).float().mean())
    out.parent.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, str(out))
    return accuracy


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--seed", type=int, default=None, help="default: 0 for variant a, 1 for variant b")
    parser.add_argument("--variant", choices=sorted(CLASSIFIERS), default="a",
                        help="a: the FID feature extractor; b: the independent one (another net and seed)")
    parser.add_argument("--out", type=Path, default=None)
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else {"a": 0, "b": 1}[args.variant]
    out = args.out or CLASSIFIERS[args.variant][1]
    accuracy = train(args.epochs, seed, out, args.variant)
    print(f"held-out accuracy {accuracy:.4f}; wrote {out}")


if __name__ == "__main__":
    main()
