"""Noise schedules: diffusers' tables, inverse λ, closed forms."""

from __future__ import annotations

import math

import numpy as np
import pytest
from diffusers import DDPMScheduler

from schedsearch.solvers import EDM, ContinuousVPCosine, ContinuousVPLinear, DiscreteVP, ModelLoadError, RectifiedFlow
from schedsearch.solvers.noise_schedules import noise_schedule_from_spec

CONFIGS = [
    {"beta_schedule": "linear"},
    {"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012},
    {"beta_schedule": "squaredcos_cap_v2"},
    {"num_train_timesteps": 50, "trained_betas": list(np.linspace(1e-3, 0.2, 50))},
]


@pytest.mark.parametrize("config", CONFIGS)
def test_discrete_vp_matches_diffusers_alphas_cumprod(config):
    ns = DiscreteVP.from_config(config)
    expected = DDPMScheduler(**config).alphas_cumprod.double().numpy()
    t = np.arange(ns.num_train_timesteps)
    alpha, sigma = ns.alpha_sigma(t)
    np.testing.assert_allclose(alpha**2, expected, rtol=1e-12)
    np.testing.assert_allclose(alpha**2 + sigma**2, 1.0, rtol=1e-12)


FAMILIES = [
    DiscreteVP.from_config({"beta_schedule": "linear"}),
    ContinuousVPLinear(),
    ContinuousVPCosine(),
    EDM(),
    RectifiedFlow(t_hi=0.999),
]


@pytest.mark.parametrize("ns", FAMILIES, ids=lambda ns: type(ns).__name__)
def test_lambda_inverse_and_monotone(ns):
    t = np.linspace(ns.t_max, ns.t_min, 257)
    lam = ns.lambda_(t)
    assert np.all(np.diff(lam) > 0)
    np.testing.assert_allclose(ns.t_of_lambda(lam), t, rtol=1e-9, atol=1e-9 * ns.t_max)
    alpha, sigma = ns.alpha_sigma(t)
    np.testing.assert_allclose(np.log(alpha) - np.log(sigma), lam, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("ns", FAMILIES, ids=lambda ns: type(ns).__name__)
def test_data_time_has_no_noise(ns):
    alpha, sigma = ns.alpha_sigma(ns.data_time)
    assert float(sigma) == 0.0 and float(alpha) == pytest.approx(1.0)
    assert float(ns.lambda_(ns.data_time)) == math.inf


def test_closed_forms():
    vp = ContinuousVPLinear()
    assert float(vp.alpha_sigma(1.0)[0]) == pytest.approx(math.exp(-(20 - 0.1) / 4 - 0.05), rel=1e-12)
    np.testing.assert_allclose(EDM().alpha_sigma(np.array([0.5, 3.0])), [[1, 1], [0.5, 3.0]])
    np.testing.assert_allclose(RectifiedFlow().alpha_sigma(0.25), [0.75, 0.25])
    cos = ContinuousVPCosine()
    f = lambda t: math.cos((t + 0.008) / 1.008 * math.pi / 2)  # noqa: E731
    assert float(cos.alpha_sigma(0.5)[0]) == pytest.approx(f(0.5) / f(0.0), rel=1e-12)


def test_discrete_lambda_is_interpolated_between_integer_timesteps():
    ns = DiscreteVP.from_config({"beta_schedule": "linear"})
    assert float(ns.lambda_(10.5)) == pytest.approx(0.5 * float(ns.lambda_(10) + ns.lambda_(11)))


def test_bad_configs_are_one_line_errors():
    with pytest.raises(ModelLoadError, match="unknown beta_schedule 'cubic'"):
        DiscreteVP.from_config({"beta_schedule": "cubic"})
    with pytest.raises(ModelLoadError, match="rescale_betas_zero_snr"):
        DiscreteVP.from_config({"rescale_betas_zero_snr": True})
    with pytest.raises(ModelLoadError, match="unknown family 've'"):
        noise_schedule_from_spec({"family": "ve"})


@pytest.mark.parametrize("ns", FAMILIES[1:], ids=lambda ns: type(ns).__name__)
def test_spec_round_trip(ns):
    again = noise_schedule_from_spec(ns.spec())
    t = np.linspace(ns.t_max, ns.t_min, 11)
    np.testing.assert_allclose(again.lambda_(t), ns.lambda_(t))


def test_discrete_spec_round_trip():
    ns = DiscreteVP.from_config({"beta_schedule": "scaled_linear", "beta_start": 0.00085, "beta_end": 0.012})
    again = noise_schedule_from_spec(ns.spec())
    np.testing.assert_array_equal(again.alphas_cumprod, ns.alphas_cumprod)
