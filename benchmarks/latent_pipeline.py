"""Our sampler against diffusers' own pipeline loop on a latent text-to-image model.

For a Stable Diffusion pipeline and the same prompts, initial latents, timesteps and guidance
scale: wall time of
  (a) NFE bare guided UNet calls (batch 2B: conditional + unconditional; the floor),
  (b) ``StableDiffusionPipeline(prompt_embeds=…, timesteps=…, latents=…, output_type="latent")``
      with DPMSolverMultistepScheduler (diffusers' loop; prompts encoded beforehand, as ours are),
  (c) our ``sample`` running ``dpmpp_2m`` on the same timesteps,
with (c)/(b) — the acceptance asks ≤ 1.0 — and the overhead above the floor, (c)−(a) and (b)−(a).
Median of repeated runs, interleaved so machine noise hits all three alike. Both results are
checked to agree (≤ 1e-4 relative) before any timing.

Default: the tiny SD pipeline of the tests (CPU). ``--realistic`` builds an SD-1.5-sized UNet
(random weights, fp16 on CUDA) and also reports seconds per 1,000 latents at NFE 5.

    .venv/bin/python benchmarks/latent_pipeline.py [--batch 16] [--repeats 7] [--realistic]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # tests.latent_pipelines builds the tiny model

from diffusers import DPMSolverMultistepScheduler, StableDiffusionPipeline  # noqa: E402
from sampler_overhead import timed  # noqa: E402  (benchmarks/ is the script's folder, first on sys.path)

from schedsearch.solvers import baseline, compile_plan, load_model, sample  # noqa: E402
from schedsearch.solvers.pipelines import quiet_loading, with_prompts  # noqa: E402

PROMPTS = ["a photo of a cat", "a red dog", "a blue house", "a green tree"]
TIMESTEPS = {5: [999, 720, 480, 260, 90], 10: [999, 880, 760, 640, 520, 400, 290, 190, 100, 30]}


def build(directory: Path, realistic: bool) -> Path:
    from tests import latent_pipelines as lp

    if not realistic:
        return lp.save_sd(directory)
    from diffusers import UNet2DConditionModel

    torch.manual_seed(0)  # SD 1.5's UNet config (860 M parameters), random weights
    unet = UNet2DConditionModel(sample_size=64, in_channels=4, out_channels=4, layers_per_block=2,
                                block_out_channels=(320, 640, 1280, 1280), cross_attention_dim=768,
                                attention_head_dim=8,
                                down_block_types=("CrossAttnDownBlock2D",) * 3 + ("DownBlock2D",),
                                up_block_types=("UpBlock2D",) + ("CrossAttnUpBlock2D",) * 3)
    lp.save_sd(directory)  # tokenizer, text encoder, VAE and scheduler of the tiny pipeline ...
    unet.save_pretrained(directory / "unet")  # ... around a full-size UNet (77-token, 768-wide states)
    import json

    enc = json.loads((directory / "text_encoder" / "config.json").read_text())
    from transformers import CLIPTextConfig, CLIPTextModel

    cfg = CLIPTextConfig(**{**{k: enc[k] for k in ("vocab_size", "bos_token_id", "eos_token_id", "pad_token_id")},
                            "hidden_size": 768, "intermediate_size": 1536, "num_hidden_layers": 2,
                            "num_attention_heads": 12, "max_position_embeddings": 77})
    CLIPTextModel(cfg).save_pretrained(directory / "text_encoder")
    tok = json.loads((directory / "tokenizer" / "tokenizer_config.json").read_text())
    (directory / "tokenizer" / "tokenizer_config.json").write_text(json.dumps({**tok, "model_max_length": 77}))
    return directory


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--guidance-scale", type=float, default=7.5)
    parser.add_argument("--realistic", action="store_true", help="an SD-1.5-sized UNet in fp16 (needs CUDA)")
    args = parser.parse_args()
    device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.realistic and device != "cuda":
        raise SystemExit("--realistic needs a CUDA device (an SD-sized UNet in fp16)")
    dtype = torch.float16 if args.realistic else torch.float32
    torch.set_grad_enabled(False)

    with tempfile.TemporaryDirectory() as tmp:
        path = build(Path(tmp) / "sd", args.realistic)
        model = with_prompts(load_model(path, device=device, dtype=dtype), PROMPTS)
        with quiet_loading():
            pipe = StableDiffusionPipeline.from_pretrained(path, dtype=dtype, safety_checker=None,
                                                           requires_safety_checker=False, low_cpu_mem_usage=False)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)
    pipe.scheduler = DPMSolverMultistepScheduler.from_config(pipe.scheduler.config, algorithm_type="dpmsolver++",
                                                             solver_order=2, final_sigmas_type="zero")
    B, g = args.batch, args.guidance_scale
    labels = torch.arange(B) % len(PROMPTS)
    prompts = [PROMPTS[i] for i in labels]
    emb, neg = pipe.encode_prompt(prompts, device, 1, True)
    unet = pipe.unet
    shape = (B, *model.sample_shape)
    print(f"{'realistic SD-1.5-sized UNet, fp16' if args.realistic else 'tiny SD pipeline (tests)'} on {device}, "
          f"batch {B}, guidance {g:g}, latents {tuple(model.sample_shape)}; median of {args.repeats}")
    print(f"{'NFE':>4} {'floor (a) s':>12} {'diffusers (b) s':>16} {'ours (c) s':>11} {'(c)/(b)':>8} "
          f"{'(b)-(a) ms':>11} {'(c)-(a) ms':>11}")
    for nfe, times in TIMESTEPS.items():
        latents = torch.randn(shape, generator=torch.Generator().manual_seed(nfe)).to(device, dtype)
        schedule = baseline("dpmpp_2m", nfe, model, grid=times)
        plan = compile_plan(schedule, model.noise_schedule)
        both = torch.cat([emb, neg])
        x2 = torch.cat([latents, latents])

        def floor():
            for t in times:
                unet(x2, torch.full((2 * B,), float(t), device=device, dtype=dtype), encoder_hidden_states=both)

        def theirs():
            return pipe(prompt_embeds=emb, negative_prompt_embeds=neg, timesteps=times, guidance_scale=g,
                        latents=latents.clone(), output_type="latent").images

        def ours():
            return sample(model, schedule, latents, cond=labels, guidance_scale=g, plan=plan)

        ref, got = theirs().float(), ours().float()
        rel = float((got - ref).norm() / ref.norm())
        assert rel <= (1e-4 if dtype == torch.float32 else 2e-2), f"ours and diffusers disagree: {rel:.2e}"
        runs: dict[str, list[float]] = {"a": [], "b": [], "c": []}
        for _ in range(args.repeats):
            for key, fn in (("a", floor), ("b", theirs), ("c", ours)):
                runs[key].append(timed(fn))
        a, b, c = (statistics.median(runs[k]) for k in "abc")
        print(f"{nfe:>4} {a:>12.4f} {b:>16.4f} {c:>11.4f} {c / b:>8.2f} {1e3 * (b - a):>11.1f} {1e3 * (c - a):>11.1f}")
        if args.realistic and nfe == 5:
            per_1000 = 1000 / B
            print(f"     seconds per 1,000 latents at NFE 5: ours {c * per_1000:.1f}, diffusers {b * per_1000:.1f}")
    print(f"(agreement checked before timing: ours vs diffusers ≤ {'1e-4' if dtype == torch.float32 else '2e-2'})")


if __name__ == "__main__":
    main()
