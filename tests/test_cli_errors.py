"""Bad input to the real console script: exit ≠ 0, one line on stderr naming the option or file, no traceback,
nothing written (issue 14). Also the honest outputs of ``compare``: no file unless asked, real names, units."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

from schedsearch.solvers import ContinuousVPLinear, SolverError, baseline, from_callable, load_model
from tests.helpers import make_tiny_unet, save_pipeline

SCRIPT = Path(sys.executable).with_name("schedsearch")


def run(*args: str, cwd: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """The console script with HOME inside ``cwd`` (so caches it would create show up as written files)."""
    base = {k: v for k, v in os.environ.items() if k not in ("XDG_CACHE_HOME", "TORCH_HOME", "HF_HOME", "HF_HUB_CACHE",
                                                             "MPLCONFIGDIR", "SCHEDSEARCH_DB")}
    base["HOME"] = str(cwd / "home")
    return subprocess.run([str(SCRIPT), *args], capture_output=True, text=True, cwd=cwd, timeout=300,
                          env={**base, **(env or {})})


def snapshot(root: Path) -> dict[str, tuple[int, int]]:
    return {str(p.relative_to(root)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(root.rglob("*"))}


def assert_refused(out: subprocess.CompletedProcess, message: str) -> None:
    assert out.returncode != 0, out.stdout
    lines = out.stderr.strip().splitlines()
    assert len(lines) == 1, out.stderr
    assert "Traceback" not in out.stderr
    assert message in lines[0], lines[0]


@pytest.fixture
def cwd(tmp_path) -> Path:
    """The working directory of a run, with the empty home folder it gets."""
    (tmp_path / "home").mkdir()
    return tmp_path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> Path:
    """Inputs the cases name, made once: schedules, noise files, model directories, reference and weights files."""
    root = tmp_path_factory.mktemp("inputs")
    ring, gmm8d = load_model("builtin:gmm-ring"), load_model("builtin:gmm-8d")
    (root / "ring.json").write_text(baseline("ddim", 3, ring).to_json())
    (root / "gmm8d.json").write_text(baseline("ddim", 3, gmm8d).to_json())
    torch.save(torch.zeros(0, 2), root / "empty.pt")
    torch.save(torch.full((3, 2), float("nan")), root / "nan.pt")
    (root / "text.pt").write_text("0.1 0.2\n0.3 0.4\n")
    tiny = save_pipeline(root / "tiny", make_tiny_unet(), {"beta_schedule": "linear"})
    weights = "unet/diffusion_pytorch_model.safetensors"
    shutil.copytree(tiny, root / "no-weights")
    (root / "no-weights" / weights).unlink()
    shutil.copytree(tiny, root / "corrupt")
    data = (tiny / weights).read_bytes()
    (root / "corrupt" / weights).write_bytes(data[: len(data) // 2])
    save_pipeline(root / "rgb", _rgb_unet(), {"beta_schedule": "linear"})
    torch.save(torch.randint(0, 256, (4, 3, 8, 8), dtype=torch.uint8), root / "ref.pt")
    (root / "text.pth").write_text("not weights\n")
    torch.save({"conv.weight": torch.zeros(1)}, root / "other.pth")
    return root


def _rgb_unet():
    from diffusers import UNet2DModel

    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return UNet2DModel(sample_size=8, in_channels=3, out_channels=3, block_out_channels=(8, 16), layers_per_block=1,
                           down_block_types=("DownBlock2D", "DownBlock2D"), up_block_types=("UpBlock2D", "UpBlock2D"),
                           norm_num_groups=8).eval()


RING = ("--model", "builtin:gmm-ring")

# (arguments, the one line's message); {in} is the inputs folder
CASES = [
    # compare: options checked before any work
    (["compare", *RING, "--grids", "foo"], "--grids: unknown 'foo'"),
    (["compare", *RING, "--grids", "ays:nope"], "--grids: unknown AYS list 'nope'"),
    (["compare", *RING, "--grids", "5000,500,100", "--nfe", "3"],
     "--grids: time 5000 is outside the model's range [0, 999]"),
    (["compare", *RING, "--schedules", "{in}/gmm8d.json"],
     "gmm8d.json: time_domain: schedule is 'continuous_vp' but the model uses 'discrete_vp'"),
    (["compare", *RING, "--guidance-scale", "2"], "--guidance-scale: builtin:gmm-ring has no unconditional input"),
    (["compare", *RING, "-n", "1"], "argument -n/--samples: must be at least 2, got 1"),
    (["compare", *RING, "-n", "0"], "argument -n/--samples: must be at least 2, got 0"),
    (["compare", *RING, "--nfe", ""], "argument --nfe: expected a comma-separated list, got ''"),
    (["compare", *RING, "--solvers", ""], "argument --solvers: expected a comma-separated list, got ''"),
    (["compare", *RING, "--grids", ""], "argument --grids: expected a comma-separated list, got ''"),
    (["compare", *RING, "--guidance-scale", "nan"], "argument --guidance-scale: must be a finite number"),
    (["compare", *RING, "--metrics", "fid"], "--metrics: 'fid' is not measured on builtin:gmm-ring"),
    (["compare", *RING, "--plot", "plot.gif"], "--plot plot.gif: unknown file type '.gif'"),
    (["compare", "--model", "{in}/rgb", "--reference", "{in}/ref.pt"],
     "--extractor-weights: feature extractor 'inception-v3-compat' needs a local weights file"),
    (["compare", "--model", "{in}/rgb", "--reference", "{in}/ref.pt", "--extractor-weights", "{in}/text.pth"],
     "text.pth: not weights of 'inception-v3-compat' (UnpicklingError"),
    (["compare", "--model", "{in}/rgb", "--reference", "{in}/ref.pt", "--extractor-weights", "{in}/other.pth"],
     "other.pth: not weights of 'inception-v3-compat' (RuntimeError: Error(s) in loading state_dict"),
    # baseline: times outside the model's range when the schedule is built
    (["baseline", "ddim", "--nfe", "3", "--grid", "5000,500,100", *RING], "--grid: time 5000 is outside"),
    (["baseline", "ddim", "--nfe", "3", "--grid", "1.5,0.5,0.1", "--model", "builtin:gmm-8d", "-o", "s.json"],
     "--grid: time 1.5 is outside the model's range [0.001, 1]"),
    # sample: counts, noise files, labels, guidance
    (["sample", "{in}/ring.json", *RING, "-n", "0"], "argument -n/--num: must be at least 1, got 0"),
    (["sample", "{in}/ring.json", *RING, "-n", "-5"], "argument -n/--num: must be at least 1, got -5"),
    (["sample", "{in}/ring.json", *RING, "--noise", "{in}/empty.pt"], "empty.pt: holds no samples (shape (0, 2))"),
    (["sample", "{in}/ring.json", *RING, "--noise", "{in}/text.pt"], "text.pt: not a tensor file"),
    (["sample", "{in}/ring.json", *RING, "--noise", "{in}/nan.pt", "--out", "x.pt"], "nan.pt: contains NaN or inf"),
    (["sample", "{in}/ring.json", *RING, "--labels", "a"], "argument --labels: expected comma-separated class labels"),
    (["sample", "{in}/ring.json", *RING, "--labels", "1,,2"], "argument --labels: expected comma-separated"),
    (["sample", "{in}/ring.json", *RING, "--labels", ""], "argument --labels: expected comma-separated"),
    (["sample", "{in}/ring.json", *RING, "--labels", "1"], "--labels: builtin:gmm-ring is not class-conditional"),
    (["sample", "{in}/ring.json", *RING, "--guidance-scale", "nan"], "argument --guidance-scale: must be a finite"),
    (["sample", "{in}/ring.json", *RING, "--guidance-scale", "2", "--out", "x.pt"],
     "--guidance-scale: builtin:gmm-ring has no unconditional input"),
    # model directories
    (["baseline", "ddim", "--nfe", "3", "--model", "{in}/no-weights"],
     "no-weights/unet (expected diffusion_pytorch_model.safetensors"),
    (["baseline", "ddim", "--nfe", "3", "--model", "{in}/corrupt"],
     "diffusion_pytorch_model.safetensors is not a readable safetensors file (corrupt or truncated?)"),
    # the trial store
    (["trials", "s", "--top", "-1", "--db", "sqlite:///runs.db"], "argument --top: must be at least 1, got -1"),
    (["trials", "s", "--nfe", "-1", "--db", "sqlite:///runs.db"], "argument --nfe: must be at least 1, got -1"),
    (["searches", "--db", "{in}/runs.db"], "is not a database URL; for a SQLite file write sqlite:////"),
    # no command
    ([], "give a command: search, resume, report, baseline, sample, refine, compare, searches, trials, export, upgrade-db, predictor"),
]


@pytest.fixture(scope="module")
def outcomes(files, tmp_path_factory) -> list[tuple[subprocess.CompletedProcess, dict, dict]]:
    """Every case run once, two console scripts at a time (each in its own folder with its own store):
    the process, and the folder's contents before and after."""
    from concurrent.futures import ThreadPoolExecutor

    from schedsearch.storage import TrialStore

    folders = []
    for k in range(len(CASES)):
        folder = tmp_path_factory.mktemp(f"case{k}")
        (folder / "home").mkdir()
        TrialStore.open(f"sqlite:///{folder / 'runs.db'}").close()
        folders.append(folder)

    def one(k: int) -> tuple[subprocess.CompletedProcess, dict, dict]:
        before = snapshot(folders[k])
        out = run(*(a.replace("{in}", str(files)) for a in CASES[k][0]), cwd=folders[k])
        return out, before, snapshot(folders[k])

    with ThreadPoolExecutor(max_workers=2) as pool:
        return list(pool.map(one, range(len(CASES))))


@pytest.mark.parametrize("k", range(len(CASES)), ids=[" ".join(a)[:60] or "(none)" for a, _ in CASES])
def test_bad_input_is_one_line_and_writes_nothing(outcomes, files, k):
    out, before, after = outcomes[k]
    assert_refused(out, CASES[k][1].replace("{in}", str(files)))
    assert after == before


def test_a_hub_id_without_network_fails_fast_naming_the_network(cwd):
    env = {"HF_ENDPOINT": "http://127.0.0.1:1", "HF_HUB_OFFLINE": "0"}
    start = time.monotonic()
    out = run("baseline", "ddim", "--nfe", "3", "--model", "org/name", cwd=cwd, env=env)
    assert time.monotonic() - start < 20
    assert_refused(out, "model: cannot reach the Hugging Face hub for 'org/name' (no network?)")
    assert "Retrying" not in out.stderr


def test_compare_fails_when_every_row_failed_and_says_why(cwd):
    out = run("compare", *RING, "--solvers", "dpm_solver_2", "--grids", "leading", "--nfe", "4", "-n", "20", "-q",
              "--plot", "p.png", "--json", "r.json", cwd=cwd)
    assert_refused(out, "every evaluation failed (1; reasons above); nothing written")
    assert "failed: dpm_solver_2/leading at NFE 4: grid leading: its last model time 0 leaves no room" in out.stdout
    assert not (cwd / "p.png").exists() and not (cwd / "r.json").exists()


def test_older_schema_names_upgrade_db_which_upgrades_it(store_url, cwd):
    import sqlalchemy as sa

    from schedsearch.storage import migrate

    engine = sa.create_engine(store_url)
    with engine.begin() as conn:
        migrate.upgrade(conn, "0001")
    engine.dispose()
    before = snapshot(cwd)
    out = run("searches", "--db", store_url, cwd=cwd)
    assert_refused(out, "upgrade it with 'schedsearch upgrade-db --db URL'")
    assert snapshot(cwd) == before
    out = run("upgrade-db", "--db", store_url, cwd=cwd)
    assert out.returncode == 0, out.stderr
    assert f"schema {migrate.head_revision()}" in out.stdout
    out = run("searches", "--db", store_url, "--format", "json", cwd=cwd)
    assert out.returncode == 0 and json.loads(out.stdout) == [], out.stderr


def test_compare_writes_only_what_it_is_asked_and_says_so(cwd):
    args = ("compare", *RING, "--solvers", "ddim,dpm_solver_2", "--grids", "leading,karras", "--nfe", "3,4",
            "-n", "50", "-q", "--metrics", "all")
    out = run(*args, cwd=cwd)
    assert out.returncode == 0, out.stderr
    assert sorted(p.name for p in cwd.iterdir()) == ["home"] and not list((cwd / "home").iterdir())
    headers = [line for line in out.stdout.splitlines() if "is better; * = best at that NFE" in line]
    assert [h.split()[0] for h in headers] == ["ref_rmse", "mmd", "nll"]
    assert "nats per sample" in headers[2] and "data units" in headers[0]
    assert "failed: dpm_solver_2/leading at NFE 3, 4: grid leading" in out.stdout  # a failed row says why
    out = run(*args, "--plot", "myplot", cwd=cwd)
    assert out.returncode == 0, out.stderr
    assert "plot: myplot.png" in out.stdout and (cwd / "myplot.png").read_bytes()[:4] == b"\x89PNG"
    assert "Warning" not in out.stderr
    help_text = run("compare", "--help", cwd=cwd).stdout
    assert "(default: 3,4,5,6,8,10)" in help_text and "(default: 1000)" in help_text


def test_from_callable_checks_its_noise_schedule():
    def fn(x, t, cond):
        return x

    with pytest.raises(TypeError, match="noise_schedule must be a NoiseSchedule .* got str 'linear'"):
        from_callable(fn, "eps", "linear", (2,))
    with pytest.raises(SolverError, match="parameterization 'epsilon' is unknown"):
        from_callable(fn, "epsilon", ContinuousVPLinear(), (2,))
    with pytest.raises(TypeError, match="sample_shape must be a tuple of sizes"):
        from_callable(fn, "eps", ContinuousVPLinear(), 2)
    assert from_callable(fn, "eps", ContinuousVPLinear(), (2,)).sample_shape == (2,)


def test_sample_refuses_nan_guidance_and_nan_noise():
    from schedsearch.solvers import sample

    model = load_model("builtin:gmm-ring")
    schedule = baseline("ddim", 3, model)
    with pytest.raises(SolverError, match="guidance_scale: nan is not finite"):
        sample(model, schedule, torch.zeros(2, 2), guidance_scale=float("nan"))
    with pytest.raises(SolverError, match="noise: contains NaN or inf values"):
        sample(model, schedule, torch.tensor([[0.0, float("nan")]]))


def test_select_trials_refuses_a_negative_top(store_url):
    from schedsearch.search.queries import select_trials
    from schedsearch.storage import StoreError, TrialStore

    store = TrialStore.open(store_url)
    search = store.create_search("s", {}, "builtin:gmm-ring", "mmd")
    with pytest.raises(StoreError, match="--top: -1 trials asked"):
        select_trials(store, search, -1, None, None)
    store.close()


def test_every_user_error_class_is_where_the_cli_looks_for_it():
    import importlib

    from schedsearch.search.cli import _USER_ERRORS

    for module, name in _USER_ERRORS:
        assert issubclass(getattr(importlib.import_module(module), name), Exception), (module, name)
