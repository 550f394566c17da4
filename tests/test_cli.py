"""The command line, run as a user runs it (real processes)."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from schedsearch.solvers import Schedule, baseline, load_model, sample
from tests.helpers import make_tiny_unet, save_pipeline

SCRIPT = Path(sys.executable).with_name("schedsearch")


def run(*args: str, cwd: Path | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=300)


def test_baseline_then_sample_reproduces_the_library(tmp_path):
    out = run("baseline", "dpmpp_3m", "--nfe", "6", "--grid", "karras", "--model", "builtin:gmm-8d",
              "-o", str(tmp_path / "s.json"))
    assert out.returncode == 0, out.stderr
    schedule = Schedule.from_json((tmp_path / "s.json").read_text())
    model = load_model("builtin:gmm-8d")
    assert schedule == baseline("dpmpp_3m", 6, model, grid="karras")
    noise = torch.randn(50, 8, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    torch.save(noise, tmp_path / "noise.pt")
    out = run("sample", str(tmp_path / "s.json"), "--model", "builtin:gmm-8d", "--noise", str(tmp_path / "noise.pt"),
              "--out", str(tmp_path / "x.pt"))
    assert out.returncode == 0, out.stderr
    assert "NFE 6" in out.stdout
    torch.testing.assert_close(torch.load(tmp_path / "x.pt"), sample(model, schedule, noise), rtol=0, atol=0)


def test_explicit_grid_list_and_stdout(tmp_path):
    out = run("baseline", "unipc_bh2", "--nfe", "4", "--grid", "999,700,400,100", "--model", "builtin:gmm-ring")
    assert out.returncode == 0, out.stderr
    data = json.loads(out.stdout)
    assert data["timesteps"] == [999.0, 700.0, 400.0, 100.0, -1.0]
    assert data["nfe"] == 4


def test_sample_image_model_with_png_and_guidance(tmp_path, tiny_unet):
    """--labels and --guidance-scale reach the sampler: the CLI equals the library with the same labels and scale,
    and differs from what it gives without either."""
    model_dir = save_pipeline(tmp_path / "m", tiny_unet, {"beta_schedule": "linear"})
    assert run("baseline", "unipc_bh2", "--nfe", "5", "--grid", "linspace", "--model", str(model_dir),
               "-o", str(tmp_path / "s.json")).returncode == 0
    out = run("sample", str(tmp_path / "s.json"), "--model", str(model_dir), "--seed", "3", "-n", "9",
              "--labels", "1,2,3", "--guidance-scale", "2", "--device", "cpu", "--png", str(tmp_path / "grid.png"),
              "--out", str(tmp_path / "x.pt"))
    assert out.returncode == 0, out.stderr
    assert (tmp_path / "grid.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    x = torch.load(tmp_path / "x.pt")
    assert x.shape == (9, 1, 8, 8)
    model = load_model(model_dir, device="cpu")
    schedule = Schedule.from_json((tmp_path / "s.json").read_text())
    noise = torch.randn(9, 1, 8, 8, generator=torch.Generator().manual_seed(3))  # what --seed 3 -n 9 draws
    labels = torch.tensor([1, 2, 3] * 3)
    torch.testing.assert_close(x, sample(model, schedule, noise, cond=labels, guidance_scale=2.0), rtol=1e-5, atol=1e-5)
    others = {  # what the CLI would give if it dropped --guidance-scale, or --labels (its default: 0, 1, 2, ...)
        "no guidance": sample(model, schedule, noise, cond=labels),
        "default labels": sample(model, schedule, noise, cond=torch.arange(9), guidance_scale=2.0),
    }
    for name, other in others.items():
        assert (other - x).abs().max() > 1e-2, name


OVERFLOWING = {  # legal, but its relaxation of 1e300 overflows the first second-order step: NaN on any model
    "format": "schedsearch.schedule/1", "time_domain": "discrete_vp", "timesteps": [999, 600, 300, 100, -1],
    "steps": [{"order": 1}, {"order": 2, "derivatives": [{"active_points": [-1], "relaxation": 1e300}]},
              {"order": 1}, {"order": 1}],
}


@pytest.mark.parametrize("cause", ["model", "schedule"])
def test_sample_refuses_non_finite_results(tmp_path, cause):
    """A model whose output is NaN, or a schedule that overflows: one line, a non-zero exit, nothing written."""
    if cause == "model":
        unet = make_tiny_unet(seed=2)
        with torch.no_grad():
            unet.conv_out.bias.fill_(float("nan"))
        model = str(save_pipeline(tmp_path / "nan-model", unet, {"beta_schedule": "linear"}))
        (tmp_path / "s.json").write_text(baseline("ddim", 3, load_model(model, device="cpu")).to_json())
    else:
        model = "builtin:gmm-ring"
        (tmp_path / "s.json").write_text(json.dumps(OVERFLOWING))
    out = run("sample", str(tmp_path / "s.json"), "--model", model, "-n", "4", "--device", "cpu",
              "--out", str(tmp_path / "x.pt"))
    assert out.returncode == 1
    assert out.stderr.strip().splitlines() == [
        "schedsearch: error: sampling produced NaN or inf values (the schedule diverges on this model); nothing written"]
    assert out.stdout == "" and not (tmp_path / "x.pt").exists()


BAD_SCHEDULE = {
    "format": "schedsearch.schedule/1", "time_domain": "discrete_vp",
    "timesteps": [999, 400, 400, -1], "steps": [{"order": 1}, {"order": 2}, {"order": 1}],
}


@pytest.mark.parametrize(
    "args,message",
    [
        (["baseline", "heun", "--nfe", "5", "--model", "builtin:gmm-ring"], "baseline: unknown 'heun'"),
        (["baseline", "ddim", "--nfe", "5", "--model", "/no/such/model"], "model: path not found: /no/such/model"),
        (["baseline", "ddim", "--nfe", "5", "--grid", "cubic", "--model", "builtin:gmm-ring"], "grid: unknown 'cubic'"),
        (["baseline", "ddim", "--model", "builtin:gmm-ring"], "the following arguments are required: --nfe"),
        (["baseline", "dpm_solver_2", "--nfe", "4", "--grid", "leading", "--model", "builtin:gmm-ring"],
         "leaves no room for the final time"),
        (["sample", "missing.json", "--model", "builtin:gmm-ring"], "schedule file not found: missing.json"),
        (["sample", "bad.json", "--model", "builtin:gmm-ring"], "timesteps[2]: 400 duplicates timesteps[1]"),
        (["sample", "garbage.json", "--model", "builtin:gmm-ring"], "schedule JSON is not valid JSON"),
        (["sample", "range.json", "--model", "builtin:gmm-ring"], "timesteps[0]: 5000 is outside the model's range"),
        (["sample", "good.json", "--model", "builtin:gmm-ring", "--noise", "nope.pt"], "--noise nope.pt: not found"),
        (["sample", "good.json", "--model", "builtin:gmm-ring", "--noise", "wrong.pt"], "--noise wrong.pt: shape (3, 5)"),
        (["sample", "good.json", "--model", "builtin:gmm-ring", "--png", "g.png"], "--png needs an image model"),
        (["sample", "good.json", "--model", "builtin:gmm-8d"], "time_domain: schedule is 'discrete_vp'"),
    ],
)
def test_bad_input_is_one_line(tmp_path, args, message):
    (tmp_path / "bad.json").write_text(json.dumps(BAD_SCHEDULE))
    (tmp_path / "garbage.json").write_text("{oops")
    (tmp_path / "range.json").write_text(json.dumps({**BAD_SCHEDULE, "timesteps": [5000, 400, 100, -1]}))
    (tmp_path / "good.json").write_text(baseline("ddim", 3, load_model("builtin:gmm-ring")).to_json())
    torch.save(torch.zeros(3, 5), tmp_path / "wrong.pt")
    out = run(*args, cwd=tmp_path)
    assert out.returncode != 0
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert message in lines[0]
    assert "Traceback" not in out.stderr


def test_compare_prints_a_table_and_writes_a_plot(tmp_path):
    schedule = tmp_path / "mine.json"
    schedule.write_text(baseline("unipc_bh2", 4, load_model("builtin:gmm-ring"), grid="karras").to_json())
    out = run("compare", "--model", "builtin:gmm-ring", "--nfe", "3,5", "--solvers", "ddim,dpmpp_2m",
              "--grids", "uniform_lambda,karras", "-n", "500", "--schedules", str(schedule),
              "--plot", str(tmp_path / "cmp.png"), "--json", str(tmp_path / "cmp.json"), "-q")
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    assert lines[1].startswith("mmd (lower is better")
    assert lines[2].split() == ["NFE", "3", "NFE", "4", "NFE", "5"]  # the given schedule adds NFE 4
    assert sum(line.count("*") for line in lines[3:]) == 3  # one best per NFE column
    assert any(line.startswith("mine") for line in lines)
    results = json.loads((tmp_path / "cmp.json").read_text())
    assert len(results) == 2 * 2 * 2 + 1
    assert all(r["metrics"]["mmd"] is not None and "ref_rmse" in r["metrics"] for r in results)
    assert (tmp_path / "cmp.png").read_bytes()[:4] == b"\x89PNG"


def test_compare_bad_input(tmp_path):
    out = run("compare", "--model", "builtin:gmm-ring", "--solvers", "rk45", "-q")
    assert out.returncode != 0 and out.stderr.strip() == "schedsearch: error: --solvers: unknown 'rk45' " \
        "(known: ddim, dpm_solver_1, dpm_solver_2, dpm_solver_3, dpmpp_2m, dpmpp_3m, unipc_bh1, unipc_bh2, " \
        "unip_bh1, unip_bh2, ipndm)"
    out = run("compare", "--model", "builtin:gmm-ring", "--nfe", "3,x", "-q")
    assert out.returncode == 2 and out.stderr.strip().splitlines() == [
        "schedsearch compare: error: argument --nfe: expected an integer, got 'x'"]
