"""Train the bundled class-conditional digits DDPM (reproducible, seeded).

    .venv/bin/python -m schedsearch.solvers.train_digits      # 10,000 steps, ~40 min on one CPU thread

A diffusers ``UNet2DModel`` with class embeddings (10 digits + 1 null class for
classifier-free guidance, label dropout 15 %), ε-prediction under diffusers' linear
betas (1,000 steps), trained on the training split with AdamW and an EMA of the weights;
the EMA weights are saved with ``DDPMPipeline.save_pretrained`` (safetensors) beside a
``schedsearch_model.json`` naming the null class and the data mean.
"""

from __future__ import annotations

import argparse
import copy
import json
import math
import time
from pathlib import Path

import torch
import torch.nn.functional as F

from .digits import DIGITS_MODEL_DIR, NUM_CLASSES, load_digits_split

SCHEDULER_CONFIG = {
    "num_train_timesteps": 1000,
    "beta_schedule": "linear",
    "beta_start": 0.0001,
    "beta_end": 0.02,
    "prediction_type": "epsilon",
    "clip_sample": False,
}


def make_unet():
    from diffusers import UNet2DModel

    return UNet2DModel(
        sample_size=8,
        in_channels=1,
        out_channels=1,
        block_out_channels=(32, 64),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"),
        up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=8,
        num_class_embeds=NUM_CLASSES + 1,
    )


def train(steps: int, batch: int, lr: float, seed: int, out: Path, label_dropout: float = 0.15) -> None:
    from diffusers import DDPMPipeline, DDPMScheduler

    torch.manual_seed(seed)  # the UNet's own initialisation draws from the global generator
    g = torch.Generator().manual_seed(seed)
    train_set, _ = load_digits_split()
    images, labels = train_set.images, train_set.labels
    scheduler = DDPMScheduler(**SCHEDULER_CONFIG)
    acp = scheduler.alphas_cumprod
    unet = make_unet().train()
    ema = copy.deepcopy(unet).eval().requires_grad_(False)
    opt = torch.optim.AdamW(unet.parameters(), lr=lr, weight_decay=1e-4)
    warmup = 200
    start = time.time()
    for step in range(1, steps + 1):
        idx = torch.randint(0, len(train_set), (batch,), generator=g)
        x0, y = images[idx], labels[idx].clone()
        y[torch.rand(batch, generator=g) < label_dropout] = NUM_CLASSES
        t = torch.randint(0, 1000, (batch,), generator=g)
        eps = torch.randn(x0.shape, generator=g)
        a = acp[t].sqrt().view(-1, 1, 1, 1)
        s = (1 - acp[t]).sqrt().view(-1, 1, 1, 1)
        loss = F.mse_loss(unet(a * x0 + s * eps, t, class_labels=y).sample, eps)
        scale = min(1.0, step / warmup) * 0.5 * (1 + math.cos(math.pi * step / steps))
        for group in opt.param_groups:
            group["lr"] = lr * max(scale, 0.02)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(unet.parameters(), 1.0)
        opt.step()
        decay = min(0.999, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), unet.parameters()):
                pe.lerp_(p, 1 - decay)
        if step % 500 == 0 or step == steps:
            print(f"step {step}/{steps} loss {loss.item():.4f} ({time.time() - start:.0f}s)", flush=True)
    out.mkdir(parents=True, exist_ok=True)
    DDPMPipeline(unet=ema, scheduler=scheduler).save_pretrained(out)
    extras = {
        "name": "builtin:digits",
        "uncond_class_label": NUM_CLASSES,
        "data_mean": float(images.mean()),
        "info": {"digits": True},
        "training": {"steps": steps, "batch": batch, "lr": lr, "seed": seed, "label_dropout": label_dropout,
                     "train_images": len(train_set), "script": "python -m schedsearch.solvers.train_digits"},
    }
    (out / "schedsearch_model.json").write_text(json.dumps(extras, indent=2) + "\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=10000)
    parser.add_argument("--batch", type=int, default=128)
    parser.add_argument("--lr", type=float, default=2e-3)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=DIGITS_MODEL_DIR)
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads (1: the shipped run)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    train(args.steps, args.batch, args.lr, args.seed, args.out)


if __name__ == "__main__":
    main()
