"""The model spectrum: exact on Gaussian data (its Jacobian is known), by Lanczos where the Jacobian is too big,
and the schedule errors on its curves against the Gaussian probe they generalise."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from schedsearch.predictors.encoding import STEP_FEATURES, encode, step_width
from schedsearch.predictors.predictor import Predictor, PredictorConfig
from schedsearch.predictors.probe import PROBE_FEATURES, PROBE_SCALES, _probe_errors_padded, spectrum_errors_padded
from schedsearch.predictors.spectrum import ModelSpectrum, measure_spectrum
from schedsearch.solvers import EDM, ContinuousVPLinear, RectifiedFlow, load_model
from schedsearch.solvers.models import from_callable

from tests.helpers import varied_schedules

RING = load_model("builtin:gmm-ring")
NS = RING.noise_schedule


def _gaussian_model(variances: list[float], ns=NS):
    """The exact denoiser of N(0, diag(variances)) data, as a network predicting x̂₀ (float64)."""
    var = torch.tensor(variances, dtype=torch.float64)

    def network(x: torch.Tensor, t: torch.Tensor, cond=None) -> torch.Tensor:
        alpha, sigma = ns.alpha_sigma_torch(t.double())
        alpha, sigma = alpha[:, None], sigma[:, None]
        return alpha * var * x / (alpha * alpha * var + sigma * sigma)

    return from_callable(network, "x0", ns, (len(variances),), dtype=torch.float64)


def _sensitivity(variances, lam: np.ndarray, ns=NS) -> np.ndarray:
    """c = α s² / (α² s² + σ²) per variance, at each λ: ``[P, len(variances)]``."""
    alpha, sigma = ns.alpha_sigma(ns.t_of_lambda(lam))
    v = np.asarray(variances)[None]
    return alpha[:, None] * v / (alpha[:, None] ** 2 * v + sigma[:, None] ** 2)


@pytest.mark.parametrize("ns", [NS, EDM(), RectifiedFlow()], ids=lambda ns: ns.time_domain)
def test_the_spectrum_of_gaussian_data_is_its_exact_sensitivity(ns):
    variances = [0.01, 0.04, 0.25, 1.0, 2.25]
    model = _gaussian_model(variances, ns)
    spectrum = measure_spectrum(model, torch.randn(3, 5, generator=torch.Generator().manual_seed(0),
                                                   dtype=torch.float64), steps=12)
    lam, curves = spectrum.arrays()
    assert len(lam) >= 12 and np.all(np.diff(lam) > 0)
    want = np.quantile(_sensitivity(variances, lam, ns), spectrum.quantiles, axis=1).T
    np.testing.assert_allclose(curves, want, rtol=1e-9, atol=1e-12)
    assert ModelSpectrum.from_dict(spectrum.to_dict()) == spectrum


def test_lanczos_finds_the_spectrum_where_the_jacobian_is_not_formed():
    isotropic = measure_spectrum(_gaussian_model([0.3] * 6), torch.randn(2, 6, dtype=torch.float64), steps=6,
                                 exact_limit=0, lanczos_steps=4, generator=torch.Generator().manual_seed(1))
    lam, curves = isotropic.arrays()  # one eigenvalue: every quantile is it (J v by differences: to 1e-6)
    np.testing.assert_allclose(curves, np.repeat(_sensitivity([0.3], lam), curves.shape[1], 1), rtol=1e-5)
    variances = list(np.geomspace(0.01, 4.0, 12))
    spread = measure_spectrum(_gaussian_model(variances), torch.randn(2, 12, dtype=torch.float64), steps=6,
                              exact_limit=0, lanczos_steps=12, generator=torch.Generator().manual_seed(2))
    lam, curves = spread.arrays()
    exact = _sensitivity(variances, lam)
    assert np.all(np.diff(curves, axis=1) >= -1e-9)  # quantiles in order
    assert np.all(curves >= exact.min(1, keepdims=True) - 1e-6) and np.all(curves <= exact.max(1, keepdims=True) + 1e-6)
    assert np.all(curves[:, -1] - curves[:, 0] > 0.5 * (exact.max(1) - exact.min(1)))  # it sees the spread


def _gaussian_spectrum(ns=NS) -> ModelSpectrum:
    """The probe's Gaussian data as a measured spectrum: one curve per probe scale, on a fine λ grid."""
    lam = np.linspace(*ns.lambda_([ns.t_max, ns.t_min]), 8001)
    curves = _sensitivity([s * s for s in PROBE_SCALES], lam, ns)
    return ModelSpectrum(tuple(lam), tuple(map(tuple, curves)), tuple(np.linspace(0.0, 1.0, len(PROBE_SCALES))))


@pytest.mark.parametrize("ns", [NS, ContinuousVPLinear(), EDM(), RectifiedFlow()], ids=lambda ns: ns.time_domain)
def test_errors_on_a_gaussian_spectrum_are_the_gaussian_probe(ns):
    model = dataclasses.replace(RING, noise_schedule=ns)  # only its noise schedule is used: the schedules' times
    schedules = varied_schedules(model, 150, seed=3)
    got = spectrum_errors_padded(schedules, ns, _gaussian_spectrum(ns))
    want = _probe_errors_padded(schedules, ns)
    compared = 0
    for b, s in enumerate(schedules):  # to the interpolation's accuracy; at the data the spectrum takes x₀ = c·x
        rows = s.num_steps - 1 if s.ends_at_data else s.num_steps
        sane = np.abs(want[b, :rows]) < 1.0  # diverging solves agree only in diverging
        np.testing.assert_allclose(got[b, :rows][sane], want[b, :rows][sane], rtol=5e-4, atol=2e-5, err_msg=str(s))
        compared += int(sane.sum())
    assert compared > 1000


def test_a_predictor_reads_the_spectrum_and_keeps_it_in_its_checkpoint():
    spectrum = _gaussian_spectrum()
    schedules = varied_schedules(RING, 40, seed=4)
    batch = encode(schedules, NS, probe=True, spectrum=spectrum)
    assert batch.steps.shape[-1] == step_width(True, spectrum.width) == STEP_FEATURES + PROBE_FEATURES + 7
    assert torch.equal(batch.steps[..., : STEP_FEATURES + PROBE_FEATURES],
                       encode(schedules, NS, probe=True).steps)  # the columns before it are unchanged
    p = Predictor(NS, PredictorConfig(ensemble=2, epochs=20), spectrum=spectrum)
    p.fit(schedules, [float(s.nfe) + 0.01 * i for i, s in enumerate(schedules)], torch.Generator().manual_seed(0))
    back = Predictor.from_bytes(*p.to_bytes(), NS)
    assert back.spectrum == spectrum
    assert np.array_equal(back.predict(schedules), p.predict(schedules))


@pytest.mark.parametrize("bad", [{"lam": (0.0,), "curves": ((1.0,),), "quantiles": (0.5,)},
                                 {"lam": (1.0, 0.0), "curves": ((1.0,), (1.0,)), "quantiles": (0.5,)},
                                 {"lam": (0.0, 1.0), "curves": ((1.0,), (float("nan"),)), "quantiles": (0.5,)},
                                 {"lam": (0.0, 1.0), "curves": ((1.0, 2.0), (1.0,)), "quantiles": (0.5, 0.6)}])
def test_a_malformed_spectrum_is_refused(bad):
    with pytest.raises(ValueError, match="model spectrum"):
        ModelSpectrum(**bad)
