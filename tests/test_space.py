"""The search space: every genome decodes to a legal schedule with the asked NFE, on every model kind."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from schedsearch.search.space import DECISIONS, Gene, Genome, SearchSpace, SpaceError, SpaceSpec
from schedsearch.solvers import (
    EDM,
    AnalyticFirstStep,
    ContinuousVPLinear,
    Corrector,
    CountingNetwork,
    DiscreteVP,
    Estimator,
    GaussianMixture,
    Prediction,
    RectifiedFlow,
    Schedule,
    baseline,
    sample,
)

MIXTURE = GaussianMixture.random(3, 3, torch.Generator().manual_seed(2))
NOISE_SCHEDULES = {
    "discrete": DiscreteVP.from_config({"num_train_timesteps": 1000, "beta_schedule": "linear"}),
    "continuous_vp": ContinuousVPLinear(),
    "edm": EDM(),
    "flow": RectifiedFlow(),
}
SUBSETS = [DECISIONS, ("times",), ("times", "order", "corrector"), ("prediction", "estimator", "derivatives"),
           ("times", "end_time", "analytic_first_step", "corrector")]


def _space(kind: str, free=DECISIONS, nfe=(3, 4, 5, 8, 12), **kw) -> SearchSpace:
    return SearchSpace(SpaceSpec(nfe=tuple(nfe), free=frozenset(free), **kw), NOISE_SCHEDULES[kind], has_data_mean=True)


@settings(max_examples=60, deadline=None)
@given(kind=st.sampled_from(sorted(NOISE_SCHEDULES)), free=st.sampled_from(SUBSETS), seed=st.integers(0, 2**32 - 1),
       nfe=st.sampled_from([1, 2, 3, 5, 8, 12]))
def test_decoded_random_mutated_and_crossed_genomes_are_legal_with_the_asked_nfe(kind, free, seed, nfe):
    space = _space(kind, free, nfe=(nfe, 12))
    rng = np.random.default_rng(seed)
    a, b = space.random(rng, nfe), space.random(rng)
    for genome in (a, b, space.mutate(a, rng), space.crossover(a, b, rng), space.with_nfe(b, nfe, rng)):
        schedule = space.decode(genome)
        schedule.check_for(space.noise_schedule)  # times inside the model's range
        assert schedule.nfe == genome.nfe
        assert Schedule.from_json(schedule.to_json()) == schedule
    assert space.decode(a).nfe == nfe and space.decode(space.with_nfe(b, nfe, rng)).nfe == nfe


def test_a_genome_takes_each_analytical_first_step_and_keeps_its_nfe():
    space = _space("continuous_vp", nfe=(4,))
    rng = np.random.default_rng(3)
    for _ in range(20):
        genome = space.random(rng)
        for analytic in space.spec.analytic:
            other = space.with_analytic(genome, analytic, rng)
            schedule = space.decode(other)
            schedule.check_for(space.noise_schedule)
            assert other.analytic is analytic and schedule.analytic_first_step is analytic and schedule.nfe == 4
            assert other.slots == 4 + (analytic is not None)
        if genome.analytic is not None:  # the same layout: the genome as it was
            other = space.with_analytic(genome, genome.analytic, rng)
            assert other == genome
    fixed = _space("continuous_vp", free=("times",), nfe=(4,))
    with pytest.raises(SpaceError, match="analytic: .* is not free"):
        fixed.with_analytic(fixed.random(rng), AnalyticFirstStep.MEAN, rng)


@pytest.mark.parametrize("free", SUBSETS, ids=lambda f: "+".join(f)[:30])
def test_decoded_schedules_make_exactly_their_nfe_model_calls(free):
    network = CountingNetwork(MIXTURE.as_model(NOISE_SCHEDULES["continuous_vp"]).network)
    model = MIXTURE.as_model(NOISE_SCHEDULES["continuous_vp"])
    from dataclasses import replace

    model = replace(model, network=network)
    space = SearchSpace(SpaceSpec(nfe=(3, 5, 7), free=frozenset(free)), model.noise_schedule, has_data_mean=True)
    rng = np.random.default_rng(0)
    noise = torch.randn(16, 3, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for _ in range(40):
        schedule = space.decode(space.mutate(space.random(rng), rng))
        network.calls = 0
        x = sample(model, schedule, noise)
        assert network.calls == schedule.nfe
        assert x.shape == noise.shape


def test_times_only_search_keeps_the_base_solver_decisions():
    space = _space("discrete", ("times",), nfe=(6,), base_solver="dpmpp_3m")
    rng = np.random.default_rng(1)
    reference = baseline("dpmpp_3m", 6, space.noise_schedule)
    for _ in range(20):
        s = space.decode(space.mutate(space.random(rng), rng))
        assert s.steps == reference.steps
        assert s.timesteps[0] == 999 and s.timesteps[-1] == -1
        assert all(t == int(t) for t in s.timesteps)  # diffusers timesteps on a discrete model


def test_integer_times_are_distinct_even_when_crowded():
    space = _space("discrete", ("times",), nfe=(12,))
    widths = (3.0,) + (-3.0,) * 11  # nearly all of λ's span in the first step
    gene = space.encode(baseline("ddim", 12, space.noise_schedule)).genes[0]
    s = space.decode(Genome(12, widths, (gene,) * 12))
    assert len(set(s.timesteps)) == len(s.timesteps) and list(s.timesteps) == sorted(s.timesteps, reverse=True)


def test_an_implicit_corrector_merges_two_slots_into_one_step():
    space = _space("continuous_vp", nfe=(4,), analytic=(None,))
    plain = Gene(Prediction.DATA, 1, Estimator.TAYLOR, ((-1,), (-1, -2), (-1, -2, -3)), (1.0,) * 3, Corrector.NONE)
    implicit = Gene(Prediction.DATA, 1, Estimator.TAYLOR, plain.points, plain.relaxations, Corrector.IMPLICIT)
    s = space.decode(Genome(4, (0.0, 0.0, 0.0, 0.0), (plain, implicit, plain, plain)))
    assert [st.corrector for st in s.steps] == [Corrector.NONE, Corrector.IMPLICIT, Corrector.NONE]
    assert s.nfe == 4 and len(s.steps) == 3
    last = space.decode(Genome(4, (0.0,) * 4, (plain, plain, implicit, plain)))  # would merge into the last step
    assert Corrector.IMPLICIT not in [st.corrector for st in last.steps] and last.nfe == 4


def test_orders_are_capped_by_history_and_the_step_to_the_data_is_first_order():
    space = _space("discrete", nfe=(5,), analytic=(None,))
    g = Gene(Prediction.DATA, 4, Estimator.TAYLOR, ((-3,), (-1, -4), (-1, -2, -3)), (0.7, 1.2, 1.0), Corrector.PSEUDO)
    s = space.decode(Genome(5, (0.0,) * 5, (g,) * 5))
    assert [st.order for st in s.steps] == [1, 2, 3, 4, 1]
    assert s.steps[-1].corrector is Corrector.NONE and s.ends_at_data
    assert s.steps[3].derivatives[0].active_points == (-3,) and s.steps[3].derivatives[0].relaxation == 0.7
    assert s.steps[1].derivatives[0].active_points == (-1,)  # -3 does not exist at step 1


def test_encode_is_canonical_for_integer_baselines():
    space = _space("discrete", nfe=(5,))
    for name in ("dpmpp_3m", "unipc_bh2", "ipndm", "ddim"):
        b = baseline(name, 5, space.noise_schedule, grid=[999, 700, 400, 150, 30])
        assert space.decode(space.encode(b)) == b


def test_analytic_first_step_keeps_the_nfe():
    space = _space("continuous_vp", nfe=(4,), analytic=(AnalyticFirstStep.MEAN,))
    s = space.decode(space.random(np.random.default_rng(3), 4))
    assert s.analytic_first_step is AnalyticFirstStep.MEAN and s.nfe == 4 and len(s.steps) >= 4


def test_optuna_suggestions_decode_legally_and_baselines_can_be_told():
    import optuna

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    space = _space("discrete", nfe=(4, 6))
    study = optuna.create_study(sampler=optuna.samplers.TPESampler(seed=0, multivariate=True, group=True))
    for _ in range(15):
        trial = study.ask()
        s = space.decode(space.suggest(trial))
        s.check_for(space.noise_schedule)
        assert s.nfe in (4, 6)
        study.tell(trial, float(np.sum(s.timesteps)))
    for name in ("dpmpp_2m", "unipc_bh2", "ipndm"):
        params, dists = space.optuna_params(space.encode(baseline(name, 6, space.noise_schedule)))
        study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, value=1.0))
    assert len(study.trials) == 18


def test_impossible_spaces_are_refused():
    tiny = DiscreteVP.from_config({"num_train_timesteps": 10, "beta_schedule": "linear"})
    with pytest.raises(SpaceError, match="nfe: 12 needs more distinct timesteps"):
        SearchSpace(SpaceSpec(nfe=(12,)), tiny)
    with pytest.raises(SpaceError, match="unknown decision 'tims'"):
        SpaceSpec(nfe=(5,), free=frozenset({"tims"}))
    with pytest.raises(SpaceError, match="'mean' needs a model with a data mean"):
        SearchSpace(SpaceSpec(nfe=(5,), analytic=(AnalyticFirstStep.MEAN,)), tiny, has_data_mean=False)
