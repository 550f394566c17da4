"""Sampling overhead of ``solvers.sample`` against the bare model and diffusers' loops.

For one UNet, batch 256, NFE 5 and 10: wall time of
  (a) NFE bare forward passes of the UNet (the floor),
  (b) diffusers' scheduler loop (DPMSolverMultistepScheduler / UniPCMultistepScheduler),
  (c) our ``sample`` running the same baseline,
with ratios (c)/(a) and (c)/(b). Median of repeated runs, interleaved so that machine
noise hits all three alike.

    .venv/bin/python benchmarks/sampler_overhead.py [--batch 256] [--repeats 7] [--device cpu]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import torch
from diffusers import DDPMPipeline, DDPMScheduler, DPMSolverMultistepScheduler, UNet2DModel, UniPCMultistepScheduler

from schedsearch.solvers import baseline, compile_plan, load_model, sample

SCHEDULER_CONFIG = {"num_train_timesteps": 1000, "beta_schedule": "linear", "prediction_type": "epsilon"}


def build_model(directory: Path, device: str):
    """A class-conditional UNet of the size of the bundled digits model, saved and loaded as a user's."""
    torch.manual_seed(0)
    unet = UNet2DModel(
        sample_size=8, in_channels=1, out_channels=1, block_out_channels=(64, 128), layers_per_block=2,
        down_block_types=("DownBlock2D", "AttnDownBlock2D"), up_block_types=("AttnUpBlock2D", "UpBlock2D"),
        norm_num_groups=16, num_class_embeds=11,
    )
    DDPMPipeline(unet=unet, scheduler=DDPMScheduler(**SCHEDULER_CONFIG)).save_pretrained(directory)
    return load_model(directory, device=device)


def timed(fn) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    start = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=256)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    with tempfile.TemporaryDirectory() as tmp:
        model = build_model(Path(tmp), args.device)
    unet = model.network.unet
    g = torch.Generator().manual_seed(0)
    noise = torch.randn(args.batch, *model.sample_shape, generator=g).to(args.device)
    labels = torch.randint(0, 10, (args.batch,), generator=g).to(args.device)

    rows = []
    for solver, name, make in [
        ("DPM-Solver++ 2M", "dpmpp_2m", lambda: DPMSolverMultistepScheduler(**SCHEDULER_CONFIG)),
        ("UniPC bh2", "unipc_bh2", lambda: UniPCMultistepScheduler(**SCHEDULER_CONFIG)),
    ]:
        for nfe in (5, 10):
            schedule = baseline(name, nfe, model, grid="linspace")
            scheduler = make()
            scheduler.set_timesteps(nfe)
            steps = [float(t) for t in scheduler.timesteps]

            @torch.inference_mode()
            def bare():
                for t in steps:
                    unet(noise, torch.full((args.batch,), t, device=args.device), class_labels=labels)

            @torch.inference_mode()
            def reference():
                scheduler.set_timesteps(nfe)
                x = noise
                for t in scheduler.timesteps:
                    out = unet(x, t, class_labels=labels).sample
                    x = scheduler.step(out, t, x).prev_sample

            def ours():
                sample(model, schedule, noise, cond=labels, plan=compile_plan(schedule, model.noise_schedule))

            for fn in (bare, reference, ours):  # warm-up
                fn()
            times: dict[str, list[float]] = {"bare": [], "diffusers": [], "ours": []}
            for _ in range(args.repeats):
                times["bare"].append(timed(bare))
                times["diffusers"].append(timed(reference))
                times["ours"].append(timed(ours))
            med = {k: statistics.median(v) for k, v in times.items()}
            rows.append((solver, nfe, med["bare"], med["diffusers"], med["ours"]))

    print(f"device={args.device} batch={args.batch} repeats={args.repeats} torch={torch.__version__} "
          f"threads={torch.get_num_threads()}")
    print(f"{'solver':<16} {'NFE':>3} {'bare (s)':>9} {'diffusers (s)':>13} {'ours (s)':>9} "
          f"{'ours/bare':>9} {'ours/diffusers':>14}")
    for solver, nfe, bare_t, ref_t, ours_t in rows:
        print(f"{solver:<16} {nfe:>3} {bare_t:>9.3f} {ref_t:>13.3f} {ours_t:>9.3f} "
              f"{ours_t / bare_t:>9.3f} {ours_t / ref_t:>14.3f}")


if __name__ == "__main__":
    main()
