"""The analytic Gaussian-mixture models: exact denoiser, exact samples."""

from __future__ import annotations

import torch

from schedsearch.solvers import ContinuousVPLinear, GaussianMixture, baseline, sample

MIX = GaussianMixture.random(4, 5, torch.Generator().manual_seed(2), spread=1.5)


def test_denoiser_is_tweedie():
    """E[x₀|x_t] = (x_t + σ²∇log p_t(x_t))/α, the score taken by autograd of the exact density."""
    x = torch.randn(64, 4, generator=torch.Generator().manual_seed(0), dtype=torch.float64) * 1.5
    for alpha, sigma in [(0.99, 0.1), (0.6, 0.8), (0.05, 0.998)]:
        xr = x.clone().requires_grad_(True)
        score = torch.autograd.grad(MIX.log_prob(xr, alpha, sigma).sum(), xr)[0]
        expected = (x + sigma**2 * score) / alpha
        torch.testing.assert_close(MIX.denoise(x, alpha, sigma), expected, rtol=1e-9, atol=1e-9)


def test_single_gaussian_posterior_mean():
    one = GaussianMixture(torch.ones(1), torch.tensor([[1.0, -2.0]]), torch.tensor([[0.5, 2.0]]))
    x = torch.randn(16, 2, dtype=torch.float64)
    a, s = 0.7, 0.7141428
    var0 = one.stds[0] ** 2
    expected = one.means[0] + a * var0 / (a * a * var0 + s * s) * (x - a * one.means[0])
    torch.testing.assert_close(one.denoise(x, a, s), expected)


def test_exact_samples_have_the_mixture_moments():
    x = MIX.sample(200_000, torch.Generator().manual_seed(1))
    torch.testing.assert_close(x.mean(0), MIX.mean, atol=0.02, rtol=0)
    second = (MIX.weights[:, None, None] * (
        torch.einsum("kd,ke->kde", MIX.means, MIX.means) + torch.diag_embed(MIX.stds**2))).sum(0)
    cov = second - torch.outer(MIX.mean, MIX.mean)
    torch.testing.assert_close(torch.cov(x.T), cov, atol=0.05, rtol=0)


def test_fine_solver_reaches_the_data_distribution():
    """A 200-step solve maps N(0, I) onto the mixture: its log-likelihood matches exact samples'."""
    ns = ContinuousVPLinear()
    model = MIX.as_model(ns)
    g = torch.Generator().manual_seed(3)
    x = sample(model, baseline("dpmpp_3m", 200, ns), torch.randn(20_000, 4, generator=g, dtype=torch.float64))
    exact = MIX.sample(20_000, g)
    gap = (MIX.log_prob(x).mean() - MIX.log_prob(exact).mean()).abs()
    assert gap < 0.05, gap
    coarse = sample(model, baseline("ddim", 3, ns), torch.randn(20_000, 4, generator=g, dtype=torch.float64))
    assert (MIX.log_prob(coarse).mean() - MIX.log_prob(exact).mean()).abs() > 5 * gap
