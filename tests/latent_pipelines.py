"""Tiny randomly initialised latent pipelines saved locally, as diffusers' own tests build them.

Each builder writes a pipeline directory (``save_pretrained``) that ``load_model`` and the
family's diffusers pipeline both load. Tokenizers come from small vocabulary files written
here: CLIP's BPE tokenizer from a word list with no merges, T5's as a fast word-level
tokenizer; nothing is downloaded.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

WORDS = ["a", "photo", "of", "the", "cat", "dog", "red", "blue", "green", "digit", "one", "two", "three",
         "sketch", "painting", "blurry", "bad", "house", "tree", "sky"]


def clip_tokenizer(root: Path, max_length: int = 16):
    from transformers import CLIPTokenizer

    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1, "!": 2}
    for w in WORDS:
        vocab[w + "</w>"] = len(vocab)
    for ch in "abcdefghijklmnopqrstuvwxyz":
        vocab.setdefault(ch, len(vocab))
        vocab.setdefault(ch + "</w>", len(vocab))
    root.mkdir(parents=True, exist_ok=True)
    (root / "vocab.json").write_text(json.dumps(vocab))
    (root / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer(str(root / "vocab.json"), str(root / "merges.txt"), model_max_length=max_length)


def t5_tokenizer(max_length: int = 32):
    from tokenizers import Tokenizer, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast

    vocab = {"<pad>": 0, "</s>": 1, "<unk>": 2, **{w: i + 3 for i, w in enumerate(WORDS)}}
    tok = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tok.pre_tokenizer = pre_tokenizers.Whitespace()
    from tokenizers import processors

    tok.post_processor = processors.TemplateProcessing(single="$A </s>", special_tokens=[("</s>", 1)])
    return PreTrainedTokenizerFast(tokenizer_object=tok, pad_token="<pad>", eos_token="</s>", unk_token="<unk>",
                                   model_max_length=max_length)


def clip_text(vocab: int, hidden: int = 16, projection: bool = False, seed: int = 0):
    from transformers import CLIPTextConfig, CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cfg = CLIPTextConfig(vocab_size=vocab, hidden_size=hidden, intermediate_size=2 * hidden, num_hidden_layers=2,
                         num_attention_heads=2, max_position_embeddings=16, bos_token_id=0, eos_token_id=1,
                         pad_token_id=1, projection_dim=hidden, hidden_act="gelu")
    return (CLIPTextModelWithProjection if projection else CLIPTextModel)(cfg)


def t5_text(vocab: int, hidden: int = 16, seed: int = 0):
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(seed)
    return T5EncoderModel(T5Config(vocab_size=vocab, d_model=hidden, d_kv=8, d_ff=32, num_layers=2, num_heads=2,
                                   relative_attention_num_buckets=8, pad_token_id=0, eos_token_id=1,
                                   decoder_start_token_id=0))


def vae(seed: int = 0, **extra):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(block_out_channels=(8, 8), in_channels=3, out_channels=3, latent_channels=4,
                         down_block_types=("DownEncoderBlock2D",) * 2, up_block_types=("UpDecoderBlock2D",) * 2,
                         norm_num_groups=4, sample_size=16, **extra)


def discrete_scheduler(prediction_type: str = "epsilon"):
    from diffusers import DDIMScheduler

    return DDIMScheduler(beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False,
                         set_alpha_to_one=False, steps_offset=1, prediction_type=prediction_type)


def save_sd(root: Path, prediction_type: str = "epsilon") -> Path:
    """Stable Diffusion 1.x/2.x: CLIP text encoder + tokenizer, VAE, UNet2DConditionModel."""
    from diffusers import StableDiffusionPipeline, UNet2DConditionModel

    tok = clip_tokenizer(root / "_vocab")
    torch.manual_seed(1)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16,
                                norm_num_groups=4, attention_head_dim=2)
    pipe = StableDiffusionPipeline(vae=vae(), text_encoder=clip_text(len(tok)), tokenizer=tok, unet=unet,
                                   scheduler=discrete_scheduler(prediction_type), safety_checker=None,
                                   feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root)
    return root


def save_sdxl(root: Path) -> Path:
    """SDXL: two CLIP text encoders (the second with projection), pooled embeddings and add_time_ids."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    tok = clip_tokenizer(root / "_vocab")
    torch.manual_seed(2)
    unet = UNet2DConditionModel(block_out_channels=(8, 16), layers_per_block=1, sample_size=8, in_channels=4,
                                out_channels=4, down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
                                up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=32,
                                norm_num_groups=4, attention_head_dim=2, addition_embed_type="text_time",
                                addition_time_embed_dim=4, projection_class_embeddings_input_dim=16 + 6 * 4,
                                transformer_layers_per_block=1, use_linear_projection=True)
    pipe = StableDiffusionXLPipeline(vae=vae(), text_encoder=clip_text(len(tok), seed=3), tokenizer=tok,
                                     text_encoder_2=clip_text(len(tok), projection=True, seed=4), tokenizer_2=tok,
                                     unet=unet, scheduler=discrete_scheduler())
    pipe.save_pretrained(root)
    return root


def save_dit(root: Path) -> Path:
    """DiT: class-conditional DiTTransformer2DModel with a learned σ (1000 classes + the null class)."""
    from diffusers import DiTPipeline, DiTTransformer2DModel

    torch.manual_seed(5)
    transformer = DiTTransformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=8, num_layers=2,
                                        num_attention_heads=2, attention_head_dim=8, num_embeds_ada_norm=1000,
                                        norm_num_groups=4)
    pipe = DiTPipeline(transformer=transformer, vae=vae(), scheduler=discrete_scheduler())
    pipe.save_pretrained(root)
    return root


def save_pixart(root: Path) -> Path:
    """PixArt-α: a T5 encoder with a word-level tokenizer, PixArtTransformer2DModel with a learned σ."""
    from diffusers import PixArtAlphaPipeline, PixArtTransformer2DModel

    tok = t5_tokenizer()
    torch.manual_seed(6)
    transformer = PixArtTransformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=8, num_layers=2,
                                           num_attention_heads=2, attention_head_dim=8, cross_attention_dim=16,
                                           caption_channels=16, num_embeds_ada_norm=1000, norm_num_groups=4)
    pipe = PixArtAlphaPipeline(tokenizer=tok, text_encoder=t5_text(len(tok), seed=7), vae=vae(),
                               transformer=transformer, scheduler=discrete_scheduler())
    pipe.save_pretrained(root)
    return root


def smooth_in_time(linear: torch.nn.Linear, scale: float, max_frequency: float = 3.0) -> None:
    """Drop the sinusoidal time features faster than ``max_frequency`` radians per unit of model time.

    A random network reads all 128 frequencies of its timestep embedding (up to one radian per
    timestep, ``scale`` timesteps per unit time), so its output oscillates in t where a trained
    model's varies smoothly; solver convergence orders only show on a smooth one."""
    half = linear.in_features // 2
    freqs = torch.exp(-torch.log(torch.tensor(10000.0)) * torch.arange(half) / half) * scale
    fast = torch.cat([freqs, freqs]) > max_frequency
    with torch.no_grad():
        linear.weight[:, fast] = 0.0


def save_sd3(root: Path, shift: float = 3.0) -> Path:
    """SD3-style flow matching: SD3Transformer2DModel, two CLIP encoders with projection, T5, shift."""
    from diffusers import FlowMatchEulerDiscreteScheduler, SD3Transformer2DModel, StableDiffusion3Pipeline

    tok = clip_tokenizer(root / "_vocab", max_length=16)
    t5tok = t5_tokenizer()
    torch.manual_seed(8)
    transformer = SD3Transformer2DModel(sample_size=8, patch_size=2, in_channels=4, out_channels=4, num_layers=2,
                                        attention_head_dim=8, num_attention_heads=2, joint_attention_dim=32,
                                        caption_projection_dim=16, pooled_projection_dim=32, pos_embed_max_size=16)
    smooth_in_time(transformer.time_text_embed.timestep_embedder.linear_1, scale=1000.0)
    pipe = StableDiffusion3Pipeline(
        transformer=transformer, scheduler=FlowMatchEulerDiscreteScheduler(shift=shift),
        vae=vae(shift_factor=0.06, scaling_factor=1.5), text_encoder=clip_text(len(tok), projection=True, seed=9),
        tokenizer=tok, text_encoder_2=clip_text(len(tok), projection=True, seed=10), tokenizer_2=tok,
        text_encoder_3=t5_text(len(t5tok), hidden=32, seed=11), tokenizer_3=t5tok)
    pipe.save_pretrained(root)
    return root


def save_clip(root: Path) -> Path:
    """A tiny CLIPModel (text + vision towers, 16×16 images) with its tokenizer: the clip_score model."""
    from transformers import CLIPConfig, CLIPModel

    tok = clip_tokenizer(root / "_vocab", max_length=16)
    torch.manual_seed(4)  # a seed whose random towers give positive image–prompt cosines (the score clamps at 0)
    text = {"vocab_size": len(tok), "hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2,
            "num_attention_heads": 2, "max_position_embeddings": 16, "bos_token_id": 0, "eos_token_id": 1,
            "pad_token_id": 1}
    vision = {"hidden_size": 16, "intermediate_size": 32, "num_hidden_layers": 2, "num_attention_heads": 2,
              "image_size": 16, "patch_size": 4, "num_channels": 3}
    model = CLIPModel(CLIPConfig(text_config=text, vision_config=vision, projection_dim=16))
    model.save_pretrained(root)
    tok.save_pretrained(root)
    return root
