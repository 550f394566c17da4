"""Optuna samplers as strategies: TPE, CMA-ES, NSGA-II (quality vs NFE) and GP.

The study lives in the search's own database (visible in optuna-dashboard) under the name
``schedsearch:<search name>``. Optuna keeps the samplers' learning in the study (trials,
CMA-ES's optimizer in their system attributes) but not their random number generators: the
states of every ``RandomState`` a sampler holds are this strategy's state (JSON, saved with
every ``ask``; nothing is unpickled). On resume they are set back on a sampler built with the
same seed, trials Optuna started that never reached the trial store are failed, and
schedules it did not propose (baselines) are added as completed trials once. The GP
sampler's cache of fitted models (a warm start, not part of any stored state) is dropped
before each proposal, so a resumed GP search proposes what the uninterrupted one would.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..space import SearchSpace
from .base import Observation, Proposal, Strategy, load_state

SAMPLERS = ("tpe", "cmaes", "nsga2", "gp")
ATTR = "schedsearch_trial"


def study_name(search: str) -> str:
    return f"schedsearch:{search}"


def _make_sampler(kind: str, seed: int) -> Any:
    import optuna

    if kind == "tpe":  # Optuna 5 changed these defaults: state them
        return optuna.samplers.TPESampler(seed=seed, multivariate=True, group=True, constant_liar=True,
                                          n_startup_trials=10)
    if kind == "cmaes":  # CMA-ES on the float parameters (times, relaxations); categoricals independently
        return optuna.samplers.CmaEsSampler(seed=seed, warn_independent_sampling=False,
                                            independent_sampler=optuna.samplers.RandomSampler(seed=seed + 1))
    if kind == "nsga2":
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=20)
    if kind == "gp":
        return optuna.samplers.GPSampler(seed=seed, n_startup_trials=10)
    raise ValueError(f"strategy: unknown Optuna sampler {kind!r} (known: {', '.join(SAMPLERS)})")


def _random_states(obj: Any, path: str = "", seen: set[int] | None = None) -> dict[str, np.random.RandomState]:
    """Every numpy ``RandomState`` inside an Optuna sampler, by attribute path (shared ones once)."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return {}
    seen.add(id(obj))
    if isinstance(obj, np.random.RandomState):
        return {path: obj}
    out: dict[str, np.random.RandomState] = {}
    if isinstance(obj, (list, tuple)):
        for i, v in enumerate(obj):
            out.update(_random_states(v, f"{path}[{i}]", seen))
    elif type(obj).__module__.startswith("optuna") and hasattr(obj, "__dict__"):
        if type(obj).__name__ == "LazyRandomState":
            obj.rng  # noqa: B018 - materialise it, so that its state is saved, not only its seed
        for name, v in vars(obj).items():
            out.update(_random_states(v, f"{path}.{name}", seen))
    return out


def _rng_state(rs: np.random.RandomState) -> list[Any]:
    name, keys, pos, has_gauss, gauss = rs.get_state(legacy=True)  # type: ignore[misc]
    return [name, [int(k) for k in keys], int(pos), int(has_gauss), float(gauss)]


def _set_rng_state(rs: np.random.RandomState, state: list[Any]) -> None:
    name, keys, pos, has_gauss, gauss = state
    rs.set_state((name, np.asarray(keys, dtype=np.uint32), int(pos), int(has_gauss), float(gauss)))


def _storage(url: str) -> Any:
    import optuna

    kwargs: dict[str, Any] = {}
    if url.startswith("sqlite"):
        kwargs = {"connect_args": {"timeout": 60}}
    else:
        kwargs = {"pool_pre_ping": True}
    storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs)
    if url.startswith("sqlite"):
        # Optuna writes every suggested parameter in a transaction of its own: with SQLite's default
        # rollback journal and full sync that is an fsync per parameter (a third of a GP search's time
        # here). WAL with synchronous=NORMAL, as the trial store uses: a killed process loses nothing
        # committed; only a power cut may lose the last commits.
        from sqlalchemy import event

        def _on_connect(dbapi_conn: Any, _record: Any) -> None:
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode = WAL")
            cur.execute("PRAGMA synchronous = NORMAL")
            cur.close()

        event.listen(storage.engine, "connect", _on_connect)
        storage.engine.dispose()  # connections made before the listener reconnect with it
    return storage


class OptunaStrategy(Strategy):
    """One Optuna sampler over the space's ``suggest`` parameters; NSGA-II minimises (objective, NFE)."""

    name = "optuna"

    def __init__(self, space: SearchSpace, rng: np.random.Generator, sampler: str, storage: str,
                 search_name: str) -> None:
        import optuna

        super().__init__(space, rng)
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.kind = sampler
        self.multi = sampler == "nsga2"
        self.sampler = _make_sampler(sampler, int(rng.integers(2**31 - 1)))
        self.storage = _storage(storage)
        self.study = optuna.create_study(
            study_name=study_name(search_name), storage=self.storage, sampler=self.sampler, load_if_exists=True,
            directions=["minimize", "minimize"] if self.multi else ["minimize"],
        )
        self.known: set[int] = set()  # our trial numbers the study already holds

    def ask(self, n: int) -> list[Proposal]:
        out = []
        for _ in range(n):
            if getattr(self.sampler, "_gprs_cache_list", None) is not None:
                self.sampler._gprs_cache_list = None  # a warm start that no stored state could rebuild
            trial = self.study.ask()
            genome = self.space.suggest(trial)
            out.append(Proposal(self.space.decode(genome), {"op": self.kind, "optuna_trial": trial.number}))
        return out

    def tell(self, observations: Sequence[Observation]) -> None:
        import optuna
        from optuna.trial import TrialState as OptunaState

        for obs in observations:
            values = None if obs.objective is None else ([obs.objective, float(obs.nfe)] if self.multi
                                                         else [obs.objective])
            number = obs.meta.get("optuna_trial")
            if number is not None:  # a trial this study proposed
                if values is None:
                    self.study.tell(int(number), state=OptunaState.FAIL, skip_if_finished=True)
                else:
                    self.study.tell(int(number), values, skip_if_finished=True)
                continue
            if obs.number in self.known or values is None:
                continue
            encoded = self.space.optuna_params(self.space.encode(obs.schedule))
            if encoded is None:
                continue
            params, dists = encoded
            self.study.add_trial(optuna.trial.create_trial(params=params, distributions=dists, values=values,
                                                           user_attrs={ATTR: obs.number}))
            self.known.add(obs.number)

    def state(self) -> bytes:
        rngs = {path: _rng_state(rs) for path, rs in _random_states(self.sampler).items()}
        return json.dumps({"rng": self.rng.bit_generator.state, "sampler_rngs": rngs}).encode()

    def restore(self, observations: Sequence[Observation], state: bytes | None,
                pending: Sequence[Mapping[str, Any]] = ()) -> None:
        import optuna
        from optuna.trial import TrialState as OptunaState

        if state is not None:
            saved = load_state(state)
            self.rng.bit_generator.state = saved["rng"]
            current = _random_states(self.sampler)
            for path, rng_state in saved.get("sampler_rngs", {}).items():
                if path in current:
                    _set_rng_state(current[path], rng_state)
            self.study = optuna.load_study(study_name=self.study.study_name, storage=self.storage,
                                           sampler=self.sampler)
        in_store = {int(m["optuna_trial"]) for m in [*(o.meta for o in observations), *pending] if "optuna_trial" in m}
        for trial in self.study.get_trials(deepcopy=False):
            if ATTR in trial.user_attrs:
                self.known.add(int(trial.user_attrs[ATTR]))
            if trial.state is OptunaState.RUNNING and trial.number not in in_store:
                self.study.tell(trial.number, state=OptunaState.FAIL)  # asked, but never reached the store
        self.tell(observations)

    def close(self) -> None:
        self.storage.remove_session()
        self.storage.engine.dispose()
