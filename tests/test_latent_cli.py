"""Every latent family from the command line on its tiny local model: baseline, sample --png, compare,
a search of configs/sd-example.yaml, and bad input as one line."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
import yaml

from schedsearch.search.cli import main
from tests import latent_pipelines as lp

FAMILIES = ["sd", "sdxl", "dit", "pixart", "sd3"]
TEXT = {"sd", "sdxl", "pixart", "sd3"}
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def models(tmp_path_factory):
    root = tmp_path_factory.mktemp("latent-cli")
    return {name: getattr(lp, f"save_{name}")(root / name) for name in FAMILIES} | {"clip": lp.save_clip(root / "clip")}


@pytest.mark.parametrize("family", FAMILIES)
def test_baseline_sample_png_and_compare(models, family, tmp_path, capsys):
    model = str(models[family])
    schedule = tmp_path / "s.json"
    assert main(["baseline", "dpmpp_2m", "--nfe", "4", "--model", model, "-o", str(schedule)]) == 0
    cond = ["--prompt", "a photo of a cat", "--prompt", "a red dog", "--negative-prompt", "blurry"] \
        if family in TEXT else ["--labels", "3,7"]
    png, out = tmp_path / "grid.png", tmp_path / "latents.pt"
    assert main(["sample", str(schedule), "--model", model, "-n", "4", "--guidance-scale", "3", "--png", str(png),
                 "--out", str(out), *cond]) == 0
    latents = torch.load(out, weights_only=True)
    assert latents.shape == (4, 4, 8, 8) and torch.isfinite(latents).all()  # --out: the final latents
    from PIL import Image

    assert Image.open(png).size == (2 * 16 + 3 * 2, 2 * 16 + 3 * 2)  # --png: a 2×2 grid of decoded 16×16 images
    if family in TEXT:  # the negative prompt reaches the guided sampler
        plain = tmp_path / "plain.pt"
        assert main(["sample", str(schedule), "--model", model, "-n", "4", "--guidance-scale", "3", "--out",
                     str(plain), *cond[:4]]) == 0
        assert not torch.allclose(torch.load(plain, weights_only=True), latents)
    noise = tmp_path / "noise.pt"
    torch.save(torch.randn(2, 4, 8, 8, generator=torch.Generator().manual_seed(1)), noise)
    assert main(["sample", str(schedule), "--model", model, "--noise", str(noise), "--out", str(out)]) == 0
    assert torch.load(out, weights_only=True).shape == (2, 4, 8, 8)  # --noise: initial latents
    capsys.readouterr()
    extra = ["--clip-model", str(models["clip"]), "--prompt", "a photo of a cat", "--metrics", "all"] \
        if family in TEXT else []
    assert main(["compare", "--model", model, "--nfe", "3", "--solvers", "dpmpp_2m,unipc_bh2",
                 "--grids", "uniform_lambda", "-n", "4", "-q", *extra]) == 0
    text = capsys.readouterr().out
    assert "ref_rmse" in text and "dpmpp_2m/uniform_lambda" in text
    if family in TEXT:
        assert "clip_score (higher is better" in text


def test_sd_example_config_searches_a_text_to_image_model(models, tmp_path, capsys):
    """configs/sd-example.yaml, pointed at the tiny SD pipeline and CLIP model, with a small budget."""
    config = yaml.safe_load((ROOT / "configs" / "sd-example.yaml").read_text())
    shutil.copy(ROOT / "configs" / "sd-prompts.txt", tmp_path / "sd-prompts.txt")
    config.update(budget=12, fidelity={"samples": [4, 8], "eta": 2}, validation={"top_k": 2, "baselines": 2,
                                                                                    "samples": 8, "seed": 1})
    config["metrics"].update(cache_dir=str(tmp_path / "cache"), batch_size=8)
    config["baselines"] = {"solvers": ["dpmpp_2m", "unipc_bh2"], "grids": ["uniform_lambda"]}
    path = tmp_path / "sd-example.yaml"
    path.write_text(yaml.safe_dump(config))
    db = f"sqlite:///{tmp_path / 'runs.db'}"
    assert main(["search", str(path), "--model", str(models["sd"]), "--clip-model", str(models["clip"]), "--db", db,
                 "-o", str(tmp_path / "out"), "-q"]) == 0
    out = capsys.readouterr().out
    assert "clip_score" in out
    exported = json.loads(next((tmp_path / "out").glob("*nfe5*.json")).read_text())
    assert exported["nfe"] == 5
    from schedsearch.storage import TrialStore

    store = TrialStore.open(db, create=False)
    try:
        search = store.get_search("sd-example")
        assert search.config["prompts"][0].startswith("a red double-decker bus")  # the file's prompts, stored
        trials = store.trials(search)
        assert sum(t.state.value == "complete" for t in trials) >= 8
        assert all("clip_score" in t.metrics for t in trials if t.state.value == "complete")
    finally:
        store.close()


@pytest.mark.parametrize("case,message", [
    ("unsupported", "pipeline class 'KandinskyV22Pipeline' in"),
    ("missing", "is missing its text_encoder component (CLIPTextModel; no text_encoder/ folder)"),
    ("prompts", "--prompts {tmp}/absent.txt: not found"),
    ("labels", "--labels: {model} takes prompts (--prompt / --prompts), not class labels"),
    ("clip", "clip model {tmp}/no-clip: no config.json there"),
])
def test_bad_input_is_one_line(models, tmp_path, capsys, case, message):
    model = tmp_path / "sd"
    shutil.copytree(models["sd"], model)
    schedule = tmp_path / "s.json"
    assert main(["baseline", "ddim", "--nfe", "3", "--model", str(model), "-o", str(schedule)]) == 0
    capsys.readouterr()
    args = ["sample", str(schedule), "--model", str(model), "-n", "2"]
    if case == "unsupported":
        index = json.loads((model / "model_index.json").read_text())
        (model / "model_index.json").write_text(json.dumps({**index, "_class_name": "KandinskyV22Pipeline"}))
    elif case == "missing":
        shutil.rmtree(model / "text_encoder")
    elif case == "prompts":
        args += ["--prompts", str(tmp_path / "absent.txt")]
    elif case == "labels":
        args += ["--labels", "1"]
    else:
        args = ["compare", "--model", str(model), "--nfe", "3", "-n", "2", "--clip-model", str(tmp_path / "no-clip")]
    assert main(args) == 1
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1, err
    assert message.format(tmp=tmp_path, model=model) in err, err


def test_prompt_files_hold_one_prompt_per_line(tmp_path):
    import argparse

    from schedsearch.search.cli.common import read_prompts
    from schedsearch.search.config import parse_config

    path = tmp_path / "prompts.txt"
    path.write_text("  a red dog  \n\n a cat\n")
    assert read_prompts(argparse.Namespace(prompt=None, prompts=str(path))) == ["a red dog", "a cat"]
    config = parse_config({"model": "builtin:digits", "nfe": 4, "budget": 4, "prompts": str(path), "metric": "fid"})
    assert config.prompts == ("a red dog", "a cat") and config.objective == "fid"
    assert config.to_dict()["prompts"] == ["a red dog", "a cat"]  # the stored config holds the prompts themselves
