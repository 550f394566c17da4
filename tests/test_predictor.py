"""The predictor's building blocks: encoding of any schedule, ranking fit, checkpoint round trip."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from schedsearch.predictors.encoding import GLOBAL_FEATURES, STEP_FEATURES, LambdaRange, encode, step_features
from schedsearch.predictors.predictor import Predictor, PredictorConfig, kendall_tau
from schedsearch.search.space import SearchSpace, SpaceSpec
from schedsearch.solvers import EDM, Derivative, Schedule, Step, load_model

MODEL = load_model("builtin:gmm-ring")
SPACE = SearchSpace(SpaceSpec(nfe=(3, 5, 8)), MODEL.noise_schedule, has_data_mean=True)


def _schedules(n: int, seed: int):
    rng = np.random.default_rng(seed)
    return [SPACE.decode(SPACE.random(rng)) for _ in range(n)]


def test_encoding_pads_variable_lengths_with_a_mask():
    schedules = _schedules(12, 0)
    batch = encode(schedules, MODEL.noise_schedule)
    assert batch.steps.shape == (12, max(s.num_steps for s in schedules), STEP_FEATURES)
    assert batch.globals.shape == (12, GLOBAL_FEATURES)
    assert batch.globals[:, 0].tolist() == pytest.approx([s.nfe / 10 for s in schedules])
    analytic = [(None, "zero", "mean").index(s.analytic_first_step and s.analytic_first_step.value) for s in schedules]
    assert batch.globals[:, 1:4].argmax(1).tolist() == analytic and (batch.globals[:, 1:4].sum(1) == 1).all()
    assert (batch.globals[:, 4] == 0).all() and (encode(schedules, MODEL.noise_schedule, 3.0).globals[:, 4] == 0.3).all()
    assert batch.mask.sum(1).tolist() == [s.num_steps for s in schedules]
    assert torch.isfinite(batch.steps).all() and (batch.steps[~batch.mask] == 0).all()
    again = encode(schedules[3:4], MODEL.noise_schedule)  # a schedule's rows do not depend on its batch
    assert torch.equal(again.steps[0], batch.steps[3, : schedules[3].num_steps])
    lam_range = LambdaRange.of(MODEL.noise_schedule)
    for b, s in enumerate(schedules):  # the batched (one λ call) path gives each schedule's own rows
        rows = torch.from_numpy(step_features(s, lam_range, MODEL.noise_schedule))
        assert torch.equal(rows, batch.steps[b, : s.num_steps])
        lam = MODEL.noise_schedule.lambda_(list(s.timesteps))
        assert abs(float(rows[0, 0]) - lam_range.scale(float(lam[0]))) < 1e-6  # λ scaled into about [-1, 1]


def _synthetic(s) -> float:
    """A known quality: higher orders and data prediction help, the first step's size hurts."""
    lam = MODEL.noise_schedule.lambda_(list(s.timesteps[:2]))
    return (-np.mean([st.order for st in s.steps]) - 0.5 * np.mean([st.prediction.value == "data" for st in s.steps])
            + 0.2 * float(lam[1] - lam[0]) - 0.3 * s.nfe)


def test_fit_learns_a_ranking_it_was_not_shown_and_checkpoints_round_trip():
    train, held = _schedules(200, 1), _schedules(100, 2)
    p = Predictor(MODEL.noise_schedule, PredictorConfig(epochs=100), seed=0)
    report = p.fit(train, [_synthetic(s) for s in train], torch.Generator().manual_seed(0))
    assert report.loss_history[-1] < report.loss_history[0]
    tau = kendall_tau(p.predict(held), [_synthetic(s) for s in held])
    assert tau > 0.7, tau
    weights, meta = p.to_bytes()
    back = Predictor.from_bytes(weights, meta, MODEL.noise_schedule)
    assert np.array_equal(back.predict(held), p.predict(held)) and back.trained_on == 200
    other = Predictor(MODEL.noise_schedule, PredictorConfig(epochs=100), seed=0)
    other.fit(train, [_synthetic(s) for s in train], torch.Generator().manual_seed(0))
    assert np.array_equal(other.predict(held), p.predict(held))  # seeded: the same fit twice


def test_an_ensemble_scores_each_schedule_alone_and_one_network_checkpoints_still_load():
    from safetensors.torch import save as save_tensors
    from schedsearch.predictors.model import ScheduleScorer

    train, held = _schedules(120, 3), _schedules(40, 4)
    p = Predictor(MODEL.noise_schedule, PredictorConfig(epochs=40, ensemble=3), seed=1)
    report = p.fit(train, [_synthetic(s) for s in train], torch.Generator().manual_seed(1))
    assert len(report.loss_history) == 40
    scores = p.predict(held)
    assert np.allclose(p.predict(held[5:9]), scores[5:9], atol=1e-12)  # no dependence on the batch
    members = [net(p._encode(held)).detach().double().numpy() for net in p.nets]
    assert not np.allclose(members[0], members[1])  # the networks differ (their own init and pairs)
    expected = np.mean([(m - float(p.score_mean[k])) / float(p.score_std[k]) for k, m in enumerate(members)], 0)
    assert np.allclose(scores, expected)  # the mean of standardised member scores
    weights, meta = p.to_bytes()
    assert meta["format"] == "schedsearch.predictor/2" and meta["config"]["ensemble"] == 3
    assert np.array_equal(Predictor.from_bytes(weights, meta, MODEL.noise_schedule).predict(held), scores)

    torch.manual_seed(0)  # a format-1 checkpoint: one network's weights, its raw scores
    single = ScheduleScorer("pool", 16)
    old_meta = {"format": "schedsearch.predictor/1", "guidance_scale": None, "seed": 0, "trained_on": 7,
                "noise_schedule": MODEL.noise_schedule.spec(),
                "config": {k: v for k, v in meta["config"].items() if k not in ("ensemble", "probe")} | {"hidden": 16}}
    old = Predictor.from_bytes(save_tensors(single.state_dict()), old_meta, MODEL.noise_schedule)
    assert old.config.ensemble == 1 and not old.config.probe and old.trained_on == 7  # no probe rows before /2
    assert np.allclose(old.predict(held), single(old._encode(held)).detach().double().numpy())
    with pytest.raises(ValueError, match="ensemble"):
        PredictorConfig(ensemble=0)


def test_a_steps_row_reads_its_own_decisions():
    """Each step's row holds its order, prediction, estimator, corrector, derivative points and relaxations where
    the layout says (steps of one structure share all but their relaxations)."""
    steps = (Step(), Step("data", 2, (Derivative((-1,), 0.8),)),
             Step("noise", 2, (Derivative((-1,), 1.2),), "implicit", "bh1"),
             Step("data", 3, (Derivative((-1, -2), 0.7), Derivative((-2, -3), 1.3)), "pseudo", "bh2"),
             Step("noise", 4, estimator="ipndm"))
    schedule = Schedule("edm", (80.0, 20.0, 5.0, 1.0, 0.3, 0.002), steps)
    rows = step_features(schedule, LambdaRange.of(EDM()), EDM())[:, 4:]

    def expected(order, prediction, estimator, corrector, derivatives):
        row = [order / 4, *(float(order == o) for o in (1, 2, 3, 4)),
               float(prediction == "data"), float(prediction == "noise"),
               *(float(estimator == e) for e in ("taylor", "bh1", "bh2", "ipndm")),
               *(float(corrector == c) for c in ("none", "pseudo", "implicit"))]
        for k in range(3):
            points, relaxation = derivatives[k] if k < len(derivatives) else ((), 1.0)
            row += [float(-o in points) for o in (1, 2, 3, 4)] + [relaxation - 1.0]
        return row

    want = [expected(1, "data", "taylor", "none", []),
            expected(2, "data", "taylor", "none", [((-1,), 0.8)]),
            expected(2, "noise", "bh1", "implicit", [((-1,), 1.2)]),
            expected(3, "data", "bh2", "pseudo", [((-1, -2), 0.7), ((-2, -3), 1.3)]),
            expected(4, "noise", "ipndm", "none", [((-1, -2, -3), 1.0)] * 3)]  # one fit through 3 points
    assert rows.shape == (5, len(want[0]))
    np.testing.assert_allclose(rows, np.array(want, dtype=np.float32), atol=1e-7)
