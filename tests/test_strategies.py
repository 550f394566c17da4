"""The strategy contract, run against every strategy: legal proposals, seeded determinism, exact restore."""

from __future__ import annotations

import shutil

import numpy as np
import pytest

from schedsearch.search.space import SearchSpace, SpaceSpec
from schedsearch.search.strategies import STRATEGIES, Observation, make_strategy
from schedsearch.solvers import DiscreteVP, Schedule

NS = DiscreteVP.from_config({"num_train_timesteps": 1000, "beta_schedule": "linear"})
TARGET = np.array([999, 640, 420, 230, 90, 20], dtype=float)


def objective(s: Schedule) -> float | None:
    """A cheap stand-in for sample quality: closeness to a target grid, with some decisions preferred."""
    times = np.array(s.timesteps[:-1])
    if times.size != TARGET.size:
        return float(abs(times.size - TARGET.size) * 100)
    value = float(np.abs(times - TARGET).mean()) + 5.0 * sum(st.prediction.value == "noise" for st in s.steps)
    if s.steps[1].order == 1:
        return None  # a "failed" trial, to exercise failures
    return value


def _space(nfe=(6,)) -> SearchSpace:
    return SearchSpace(SpaceSpec(nfe=nfe, analytic=(None,), correctors=("none", "pseudo")), NS, has_data_mean=False)


def _make(name: str, tmp_path, seed: int = 0, db: str = "study.db"):
    nfe = (5, 6, 7) if name == "nsga2" else (6,)
    return make_strategy(name, _space(nfe), np.random.default_rng(seed), storage=f"sqlite:///{tmp_path / db}",
                         search_name="t")


def _round(strategy, number: int, n: int = 4):
    proposals = strategy.ask(n)
    obs = [Observation(number + i, p.schedule, objective(p.schedule), dict(p.meta)) for i, p in enumerate(proposals)]
    return proposals, obs


@pytest.mark.parametrize("name", STRATEGIES)
def test_proposals_are_legal_and_seeded(name, tmp_path):
    runs = []
    for seed_db in ("a.db", "b.db"):
        strategy = _make(name, tmp_path, seed=7, db=seed_db)
        hashes, number = [], 0
        for _ in range(5):
            proposals, obs = _round(strategy, number)
            assert 1 <= len(proposals) <= 4
            for p in proposals:
                p.schedule.check_for(NS)
                assert p.schedule.nfe in strategy.space.spec.nfe
            strategy.tell(obs)
            number += len(obs)
            hashes += [p.schedule.canonical_hash() for p in proposals]
        strategy.close()
        runs.append(hashes)
    assert runs[0] == runs[1]  # same seed, same proposals


@pytest.mark.parametrize("name", STRATEGIES)
def test_restore_from_observations_and_state_continues_exactly(name, tmp_path):
    original = _make(name, tmp_path, seed=3)
    history: list[Observation] = []
    number = 0
    for _ in range(4):
        _, obs = _round(original, number)
        original.tell(obs)
        history += obs
        number += len(obs)
    # the driver's view when it dies: this batch asked (state saved with it), half of it measured
    proposals, obs = _round(original, number)
    state = original.state()
    if (tmp_path / "study.db").exists():  # the Optuna study as it was then (a WAL database: its log too)
        for suffix in ("", "-wal"):
            if (tmp_path / f"study.db{suffix}").exists():
                shutil.copy(tmp_path / f"study.db{suffix}", tmp_path / f"copy.db{suffix}")
    measured, pending = obs[:2], obs[2:]
    original.tell(obs)
    later = []
    for k in range(3):
        p, o = _round(original, number + 4 + 4 * k)
        original.tell(o)
        later.append([x.schedule.canonical_hash() for x in p])
    original.close()

    restored = _make(name, tmp_path, seed=999, db="copy.db")  # the seed comes back from the state
    restored.restore(history + measured, state, pending=[dict(o.meta) for o in pending])
    restored.tell(pending)
    again = []
    for k in range(3):
        p, o = _round(restored, number + 4 + 4 * k)
        restored.tell(o)
        again.append([x.schedule.canonical_hash() for x in p])
    restored.close()
    assert again == later


@pytest.mark.parametrize("name", ["evolution", "generational", "guided"])
def test_learning_strategies_beat_random_search(name, tmp_path):
    def best_after(strategy_name: str, seed: int) -> float:
        strategy = _make(strategy_name, tmp_path, seed=seed, db=f"{strategy_name}{seed}.db")
        if strategy_name in ("generational", "guided"):
            options = {"population": 12, "keep": 4, "mutants": 6, "crossovers": 2} if strategy_name == "generational" \
                else {"epochs": 80, "candidates": 300}
            strategy = make_strategy(strategy_name, _space(), np.random.default_rng(seed), options=options)
        values, number = [], 0
        while number < 120:
            _, obs = _round(strategy, number)
            strategy.tell(obs)
            values += [o.objective for o in obs if o.objective is not None]
            number += len(obs)
        strategy.close()
        return min(values)

    learned = [best_after(name, s) for s in range(3)]
    random = [best_after("random", s) for s in range(3)]
    assert np.mean(learned) < 0.8 * np.mean(random), (learned, random)


def test_state_is_json_and_a_foreign_state_is_one_clear_error(tmp_path):
    import json
    import pickle

    from schedsearch.search.strategies.base import StateError

    for name in ("generational", "tpe"):
        strategy = _make(name, tmp_path, seed=1, db=f"{name}.db")
        _, obs = _round(strategy, 0)
        strategy.tell(obs)
        saved = json.loads(strategy.state())  # plain JSON: nothing in the store is ever unpickled
        assert "rng" in saved
        with pytest.raises(StateError, match="not the JSON this schedsearch writes"):
            strategy.restore([], pickle.dumps({"rng": None}))
        strategy.close()


def test_guided_resumes_with_its_stored_predictor_and_ranks_better_than_chance(tmp_path, monkeypatch):
    from schedsearch.predictors.predictor import Predictor, kendall_tau

    options = {"initial": 16, "round_size": 8, "candidates": 200, "epochs": 80}
    strategy = make_strategy("guided", _space(), np.random.default_rng(5), options=options)
    history, number = [], 0
    while number < 40:  # 16 random, then guided rounds
        _, obs = _round(strategy, number)
        strategy.tell(obs)
        history += obs
        number += len(obs)
    guided = [o for o in history if o.meta.get("op") == "guided" and o.objective is not None]
    assert guided and all("predicted" in o.meta for o in guided)
    state, (kind, (data, meta)) = strategy.state(), next(iter(strategy.artifacts().items()))
    assert kind == "predictor" and meta["trials"] == sorted(o.number for o in history[:-8] if o.number >= 0)
    assert meta["checkpoint"]["config"]["probe"] is True  # it reads the Gaussian probe's rows (the default)
    with pytest.raises(ValueError, match="probe 'yes' must be true or false"):
        make_strategy("guided", _space(), np.random.default_rng(5), options={"probe": "yes"})

    restored = make_strategy("guided", _space(), np.random.default_rng(5), options=options)
    restored.load_artifact(kind, data, meta)
    restored.restore(history[:-8], state)  # the state saved with the last ask: its round's queue
    monkeypatch.setattr(Predictor, "fit", lambda *a, **k: pytest.fail("refitted instead of loading the checkpoint"))
    again = restored._fit()
    probe = [p.schedule for p in make_strategy("random", _space(), np.random.default_rng(9)).ask(12)]
    assert np.array_equal(again.predict(probe), strategy.predictor.predict(probe))
    # 32 trials are enough to rank the stand-in objective of fresh random schedules better than chance
    fresh = [s for s in (p.schedule for p in make_strategy("random", _space(), np.random.default_rng(11)).ask(200))
             if objective(s) is not None]
    assert kendall_tau(again.predict(fresh), [objective(s) for s in fresh]) > 0.1  # chance: 0 ± 0.06


def test_guided_first_tries_the_best_schedule_so_far_with_each_other_analytical_first_step():
    from schedsearch.solvers import AnalyticFirstStep

    space = SearchSpace(SpaceSpec(nfe=(6,), correctors=("none", "pseudo")), NS, has_data_mean=True)
    strategy = make_strategy("guided", space, np.random.default_rng(4), options={"initial": 4, "epochs": 20,
                                                                                  "candidates": 64})
    baselines = [make_strategy("random", space, np.random.default_rng(k)).ask(1)[0].schedule for k in range(6)]
    baselines = [s for s in baselines if objective(s) is not None]
    told = [Observation(k, s, objective(s), {}) for k, s in enumerate(baselines)]
    strategy.tell(told)  # as the search loop tells its baselines before the first ask
    best = min(told, key=lambda o: (o.objective, o.number))
    proposals = strategy.ask(4)
    others = [a for a in (None, AnalyticFirstStep.ZERO, AnalyticFirstStep.MEAN) if a is not best.schedule.analytic_first_step]
    assert [p.meta["op"] for p in proposals] == ["transplant", "transplant", "random", "random"]
    for p, analytic in zip(proposals, others):
        assert p.meta["parents"] == [best.number] and p.schedule.analytic_first_step is analytic
        # the best's steps (their prediction types), one slot added (its widest interval split) or removed (merged)
        short, long = sorted(([st.prediction for st in p.schedule.steps], [st.prediction for st in best.schedule.steps]),
                             key=len)
        rest = iter(long)
        assert all(any(g == h for h in rest) for g in short) and len(long) - len(short) <= 1
