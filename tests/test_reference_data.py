"""A user's own reference images and feature extractor: files, folders, errors, Inception by local weights."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from schedsearch.search.metrics.fidelity import INCEPTION_EXTRACTOR, ExtractorError, FidelityConfig, content_key, fidelity_metrics
from schedsearch.search.metrics.reference_data import ReferenceDataError, load_reference_images
from tests.helpers import make_tiny_unet, save_pipeline
from tests.test_cli import run


@pytest.fixture(scope="module")
def gray() -> torch.Tensor:
    return torch.randint(0, 256, (6, 1, 8, 8), generator=torch.Generator().manual_seed(0), dtype=torch.uint8)


@pytest.fixture(scope="module")
def rgb() -> torch.Tensor:
    return torch.randint(0, 256, (5, 3, 8, 8), generator=torch.Generator().manual_seed(1), dtype=torch.uint8)


def _write_pngs(folder, images: torch.Tensor) -> None:
    from PIL import Image

    folder.mkdir()
    for i, img in enumerate(images):
        arr = img[0].numpy() if img.shape[0] == 1 else img.permute(1, 2, 0).numpy()
        Image.fromarray(arr).save(folder / f"{i:03d}.png")


def test_every_format_reads_to_the_same_uint8_images(tmp_path, gray, rgb):
    floats = gray.float() / 127.5 - 1
    torch.save(floats, tmp_path / "f.pt")
    np.save(tmp_path / "nhwc.npy", gray.permute(0, 2, 3, 1).numpy())
    np.save(tmp_path / "nhw.npy", gray[:, 0].numpy())
    np.savez(tmp_path / "a.npz", images=gray.numpy(), labels=np.arange(6))
    _write_pngs(tmp_path / "pngs", gray)
    for name in ("f.pt", "nhwc.npy", "nhw.npy", "a.npz", "pngs"):
        got = load_reference_images(tmp_path / name, (1, 8, 8))
        assert got.dtype == torch.uint8 and torch.equal(got, gray), name
    _write_pngs(tmp_path / "rgb", rgb)
    assert torch.equal(load_reference_images(tmp_path / "rgb", (3, 8, 8)), rgb)


@pytest.mark.parametrize(
    ("make", "message"),
    [
        (lambda p: p / "missing.pt", "no such file or directory"),
        (lambda p: torch.save(torch.zeros(4, 3, 8, 8), p / "x.pt") or p / "x.pt", "images are 3×8×8 (C×H×W), the model samples 1×8×8"),
        (lambda p: torch.save(torch.full((4, 1, 8, 8), 3.0), p / "x.pt") or p / "x.pt", "must lie in [-1, 1]"),
        (lambda p: torch.save({"a": 1}, p / "x.pt") or p / "x.pt", "holds a dict"),
        (lambda p: torch.save(torch.zeros(1, 1, 8, 8), p / "x.pt") or p / "x.pt", "at least 2 images"),
        (lambda p: (p / "x.txt").write_text("1") and p / "x.txt", "unknown format '.txt'"),
        (lambda p: (p / "x.npy").write_text("garbage") and p / "x.npy", "cannot be read"),
        (lambda p: (p / "d").mkdir() or p / "d", "no images"),
    ],
)
def test_bad_reference_data_is_named(tmp_path, make, message):
    with pytest.raises(ReferenceDataError, match=message.replace("[", r"\[").replace("]", r"\]").replace("(", r"\(").replace(")", r"\)")):
        load_reference_images(make(tmp_path), (1, 8, 8))


def test_bad_image_folders_are_named(tmp_path, gray):
    from PIL import Image

    _write_pngs(tmp_path / "mixed", gray)
    Image.fromarray(np.zeros((9, 8), np.uint8)).save(tmp_path / "mixed" / "zzz.png")
    with pytest.raises(ReferenceDataError, match="zzz.png: size 8×9 differs from 000.png's 8×8"):
        load_reference_images(tmp_path / "mixed", (1, 8, 8))
    _write_pngs(tmp_path / "broken", gray)
    (tmp_path / "broken" / "bad.png").write_bytes(b"not a png")
    with pytest.raises(ReferenceDataError, match="bad.png: not a readable image"):
        load_reference_images(tmp_path / "broken", (1, 8, 8))


def test_compare_on_a_users_model_with_their_reference_folder(tmp_path, gray):
    model_dir = save_pipeline(tmp_path / "model", make_tiny_unet(), {"num_train_timesteps": 1000})
    _write_pngs(tmp_path / "ref", gray.repeat(4, 1, 1, 1))
    out = run("compare", "--model", str(model_dir), "--nfe", "3", "--solvers", "ddim", "--grids", "karras",
              "-n", "24", "--reference", str(tmp_path / "ref"), "--extractor", "schedsearch-digits",
              "--cache-dir", str(tmp_path / "cache"), "--plot", "", "-q")
    assert out.returncode == 0, out.stderr
    assert out.stdout.splitlines()[1].startswith("fid (lower is better")
    assert list((tmp_path / "cache").rglob("*ref-*")), "reference statistics were cached"


def test_compare_rejects_bad_extractor_settings(tmp_path, gray, capsys):
    """In-process (the CLI's own ``main``): the same one-line errors, without five interpreter starts."""
    from schedsearch.search.cli import main

    model_dir = save_pipeline(tmp_path / "model", make_tiny_unet(), {"num_train_timesteps": 1000})
    torch.save(gray, tmp_path / "ref.pt")
    common = ("compare", "--model", str(model_dir), "--nfe", "3", "--solvers", "ddim", "-n", "8", "--plot", "", "-q")
    cases = {
        ("--reference", str(tmp_path / "ref.pt"), "--extractor", "nope"): "feature extractor 'nope' is not registered",
        ("--reference", str(tmp_path / "ref.pt"), "--extractor", "schedsearch-digits", "--extractor-weights",
         str(tmp_path / "w.pth")): "no such file",
        ("--reference", str(tmp_path / "ref.pt")): "inception-v3-compat takes RGB images; this model samples 1",
        ("--extractor", "inception-v3-compat"): "give the reference images too",
        ("--reference", str(tmp_path / "nothing.pt")): "no such file or directory",
    }
    for extra, message in cases.items():
        code = main([*common, *extra])
        err = capsys.readouterr().err
        lines = err.strip().splitlines()
        assert code != 0 and len(lines) == 1 and message in lines[0], (extra, err)


@pytest.fixture(scope="module")
def inception_weights(tmp_path_factory):
    """torch-fidelity's Inception with random weights, saved as a user's local weights file."""
    from torch_fidelity.feature_extractor_inceptionv3 import FeatureExtractorInceptionV3

    class Unloaded(FeatureExtractorInceptionV3):
        def load_state_dict(self, state_dict, strict=True, assign=False):  # keep the random initialisation
            return None

    folder = tmp_path_factory.mktemp("inception")
    torch.save({}, folder / "empty.pth")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        net = Unloaded(INCEPTION_EXTRACTOR, ["2048"], feature_extractor_weights_path=str(folder / "empty.pth"))
    torch.save(net.state_dict(), folder / "inception.pth")
    return folder / "inception.pth"


def test_inception_from_a_local_weights_file_is_torch_fidelity(tmp_path, rgb, inception_weights):
    import torch_fidelity

    from schedsearch.search.metrics.fidelity import ImageTensorDataset

    g = torch.Generator().manual_seed(3)
    samples = torch.randint(0, 256, (8, 3, 8, 8), generator=g, dtype=torch.uint8)
    reference = torch.cat([rgb, rgb.flip(0)])
    config = FidelityConfig(extractor=INCEPTION_EXTRACTOR, extractor_weights=inception_weights, prc=False,
                            cache_root=tmp_path / "cache")
    config.check()
    ours = fidelity_metrics(samples, reference, config)
    theirs = torch_fidelity.calculate_metrics(
        input1=ImageTensorDataset(samples), input2=ImageTensorDataset(reference), cuda=False, fid=True, kid=True,
        kid_subset_size=8, feature_extractor=INCEPTION_EXTRACTOR,
        feature_extractor_weights_path=str(inception_weights), verbose=False,
    )
    assert ours["fid"] == pytest.approx(theirs["frechet_inception_distance"], rel=1e-6)
    assert ours["kid"] == pytest.approx(theirs["kernel_inception_distance_mean"], rel=1e-6)
    # other weights are other features: the cached reference statistics must not be reused
    other = tmp_path / "other.pth"
    state = torch.load(inception_weights, weights_only=True)
    state["fc.bias"] = state["fc.bias"] + 1
    torch.save(state, other)
    assert content_key(reference, config) != content_key(reference, FidelityConfig(
        extractor=INCEPTION_EXTRACTOR, extractor_weights=other, prc=False))


def test_unknown_extractor_is_a_config_error():
    with pytest.raises(ExtractorError, match="not registered"):
        FidelityConfig(extractor="nope").check()


def test_a_samplers_overshoot_is_clamped_as_samples_are(tmp_path, gray):
    floats = gray.float() / 127.5 - 1
    floats[0, 0, 0, 0], floats[1, 0, 0, 0] = -1.3, 1.6  # a sampler's output reaches a little past [-1, 1]
    torch.save(floats, tmp_path / "s.pt")
    want = gray.clone()
    want[0, 0, 0, 0], want[1, 0, 0, 0] = 0, 255
    assert torch.equal(load_reference_images(tmp_path / "s.pt", (1, 8, 8)), want)


def test_the_guided_teachers_samples_are_a_reference(tmp_path):
    """``sample --out`` of the 100-step solve at a guidance scale is the reference of a guided comparison."""
    assert run("baseline", "dpmpp_3m", "--nfe", "12", "--model", "builtin:digits", "-o", str(tmp_path / "t.json")).returncode == 0
    out = run("sample", str(tmp_path / "t.json"), "--model", "builtin:digits", "-n", "40", "--seed", "7",
              "--guidance-scale", "2", "--out", str(tmp_path / "ref.pt"))
    assert out.returncode == 0, out.stderr
    ref = torch.load(tmp_path / "ref.pt")
    assert ref.abs().max() > 1, "the sampler's output overshoots [-1, 1], which the reference must accept"
    out = run("compare", "--model", "builtin:digits", "--nfe", "4", "--solvers", "ddim", "--grids", "quadratic",
              "--guidance-scale", "2", "-n", "40", "--reference", str(tmp_path / "ref.pt"), "--metrics", "fid",
              "--cache-dir", str(tmp_path / "cache"), "--plot", "", "-q")
    assert out.returncode == 0, out.stderr
    assert "ddim/quadratic" in out.stdout
