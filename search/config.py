"""Search configuration: YAML validated once, at the edge, into typed frozen objects.

Every problem is one :class:`ConfigError` line naming the key and what is allowed
(``space.free: unknown decision 'tims' (known: times, end_time, …)``). The validated
config is stored with the search (``to_dict``) and is what ``resume`` runs.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from .context import EvaluationSpec
from .refine_defaults import LEARNABLE, REFINE_DEFAULTS, Distance
from .space import DECISIONS, PRESETS, SpaceError, SpaceSpec

STRATEGY_NAMES = ("random", "evolution", "generational", "guided", "tpe", "cmaes", "nsga2", "gp")
#: config keys that may change between a search and its resume (where it runs, how much it spends and what
#: follows the search — not what it searches)
VOLATILE = ("engine", "db", "output", "budget", "refine")


class ConfigError(ValueError):
    """A configuration that cannot be used; the message names the key."""


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, validate_default=True)


class SpaceConfig(_Model):
    """Which decisions are free and their legal values (see ``search.space``)."""

    free: tuple[str, ...] | str = "usf"
    orders: tuple[int, ...] = (1, 2, 3, 4)
    order_weights: tuple[float, ...] | None = None
    predictions: tuple[Literal["data", "noise"], ...] = ("data", "noise")
    estimators: tuple[Literal["taylor", "bh1", "bh2", "ipndm"], ...] = ("taylor", "bh1", "bh2", "ipndm")
    correctors: tuple[Literal["none", "pseudo", "implicit"], ...] = ("none", "pseudo", "implicit")
    analytic: tuple[Literal["none", "zero", "mean"], ...] = ("none", "zero", "mean")
    relaxation: tuple[float, float] = (0.5, 1.5)
    max_points: int = Field(4, ge=1, le=4)
    end_time: tuple[float, float] | None = None
    base_solver: str = "unipc_bh2"
    integer_times: bool | None = None
    time_sigma: float = Field(0.3, gt=0)
    mutation_rate: float = Field(0.3, gt=0, le=1)

    @field_validator("free")
    @classmethod
    def _free(cls, value: tuple[str, ...] | str) -> tuple[str, ...]:
        if isinstance(value, str):
            if value not in PRESETS:
                raise ValueError(f"unknown preset {value!r} (presets: {', '.join(PRESETS)}; or a list of "
                                 f"decisions: {', '.join(DECISIONS)})")
            return PRESETS[value]
        unknown = [v for v in value if v not in DECISIONS]
        if unknown:
            raise ValueError(f"unknown decision {unknown[0]!r} (known: {', '.join(DECISIONS)})")
        if not value:
            raise ValueError("at least one decision must be free")
        return tuple(value)

    @field_validator("orders")
    @classmethod
    def _orders(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(o not in (1, 2, 3, 4) for o in value):
            raise ValueError(f"{list(value)}: orders are values in 1..4")
        return tuple(sorted(set(value)))


class StrategyConfig(_Model):
    name: str = "evolution"
    batch_size: int = Field(4, ge=1, description="proposals evaluated between two updates of the strategy")
    options: dict[str, Any] = Field(default_factory=dict)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str) -> str:
        if value not in STRATEGY_NAMES:
            raise ValueError(f"unknown strategy {value!r} (known: {', '.join(STRATEGY_NAMES)})")
        return value


class BaselinesConfig(_Model):
    solvers: tuple[str, ...] = ("dpmpp_2m", "dpmpp_3m", "unipc_bh1", "unipc_bh2", "ipndm")
    grids: tuple[str, ...] = ("uniform_lambda", "quadratic", "karras", "uniform_t")

    @field_validator("solvers")
    @classmethod
    def _solvers(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from schedsearch.solvers import BASELINES

        unknown = [v for v in value if v not in BASELINES]
        if unknown:
            raise ValueError(f"unknown solver {unknown[0]!r} (known: {', '.join(BASELINES)})")
        return value

    @field_validator("grids")
    @classmethod
    def _grids(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        from schedsearch.solvers import GRIDS

        unknown = [v for v in value if v not in GRIDS and not v.startswith("ays:")]
        if unknown:
            raise ValueError(f"unknown grid {unknown[0]!r} (known: {', '.join(GRIDS)}, ays:<name>)")
        return value


class FidelityConfig(_Model):
    """Successive halving over the number of samples: every proposal at ``samples[0]``, the best
    1/``eta`` of each level promoted to the next."""

    samples: tuple[int, ...] = (250, 1000)
    eta: int = Field(3, ge=2)

    @field_validator("samples")
    @classmethod
    def _samples(cls, value: tuple[int, ...]) -> tuple[int, ...]:
        if not value or any(v < 2 for v in value) or list(value) != sorted(set(value)):
            raise ValueError(f"{list(value)}: sample counts must be increasing integers ≥ 2")
        return value


class ValidationConfig(_Model):
    """After the budget: the ``top_k`` searched schedules and the ``baselines`` best baselines per NFE are
    re-measured on a held-out noise set (``seed``, ``samples``); the winner is chosen on that figure."""

    top_k: int = Field(3, ge=1)
    baselines: int = Field(3, ge=1)
    samples: int = Field(2000, ge=2)
    seed: int = 1


class RefineConfig(_Model):
    """After the budget, before validation: the ``top_k`` best searched schedules and the ``baselines`` best
    baselines per NFE have their continuous numbers (``learn``: times, derivative relaxations, free per-step
    weights, the network's input times) learned by gradient descent against the teacher — the reference solve of a training noise set
    (``seed``, ``samples`` draws), apart from the search and held-out noise. Each refined schedule is a trial
    (stage ``refine``) measured like the others and validated on the held-out noise. Off by default."""

    top_k: int = Field(0, ge=0)
    baselines: int = Field(0, ge=0)
    iterations: int = Field(REFINE_DEFAULTS["iterations"], ge=1)
    samples: int = Field(REFINE_DEFAULTS["samples"], ge=4)
    batch_size: int = Field(REFINE_DEFAULTS["batch_size"], ge=1)
    seed: int = REFINE_DEFAULTS["seed"]
    lr_times: float = Field(REFINE_DEFAULTS["lr_times"], gt=0)
    lr_coefficients: float = Field(REFINE_DEFAULTS["lr_coefficients"], gt=0)
    learn: tuple[Literal["times", "relaxations", "free_weights", "model_times"], ...] = LEARNABLE
    feature_weight: float | None = Field(None, ge=0, description="the image-feature term's weight (default: 1 where "
                                                                 "the model has a feature network, else 0)")
    distance: Distance = Field(
        REFINE_DEFAULTS["distance"], description="the data-space distance to the teacher per draw, averaged over "
                                                 "draws: euclidean, or squared (the mean squared error)")

    @field_validator("learn")
    @classmethod
    def _learn(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        if not value:
            raise ValueError(f"nothing to learn: give at least one of {', '.join(LEARNABLE)}")
        return tuple(dict.fromkeys(value))

    @property
    def enabled(self) -> bool:
        return self.top_k + self.baselines > 0

    def options(self) -> dict[str, Any]:
        """What a refinement job is told (the rest comes from the search's evaluation spec)."""
        return self.model_dump(mode="json", exclude={"top_k", "baselines"})


class MetricsConfig(_Model):
    reference: str | None = None
    clip_model: str | None = Field(None, description="a local CLIPModel directory: the clip_score of text models")
    extractor: str | None = None
    extractor_weights: str | None = None
    cache_dir: str | None = "~/.cache/schedsearch"
    reference_steps: int = Field(100, ge=10)
    batch_size: int = Field(1000, ge=1)


class EngineConfig(_Model):
    kind: Literal["local", "ray", "tune"] = "local"
    num_workers: int | None = Field(None, ge=1)
    num_cpus: float = Field(1.0, gt=0)
    num_gpus: float = Field(0.0, ge=0)
    ray_address: str | None = None
    rescan_s: float = Field(5.0, gt=0, description="how often a pool without num_workers recounts the cluster")
    head_timeout_s: float = Field(10.0, gt=0, description="how long the Ray head may not answer before the search "
                                                          "stops (resumably)")
    asha_eta: int = Field(3, ge=2, description="tune: ASHA's reduction factor")
    asha_levels: int = Field(3, ge=1, description="tune: rungs per evaluation (1: no early stopping)")
    max_failures: int = Field(3, ge=0, description="tune: retries of a trial whose worker died")
    threads: int | None = Field(None, ge=1, description="torch threads per worker")
    device: str | None = None


class SearchConfig(_Model):
    name: str | None = None
    model: str
    nfe: tuple[int, ...]
    objective: str | None = Field(None, validation_alias=AliasChoices("objective", "metric"))
    guidance_scale: float | None = None
    prompts: tuple[str, ...] | None = Field(None, description="text models: a list of prompts, or a file of them "
                                                                 "(one per line); noise i is paired with prompt i mod P")
    negative_prompt: str | None = None
    budget: int = Field(ge=1)
    seed: int = 0
    noise_seed: int = 0
    db: str | None = None
    output: str | None = None
    space: SpaceConfig = Field(default_factory=SpaceConfig)
    strategy: StrategyConfig = Field(default_factory=StrategyConfig)
    baselines: BaselinesConfig = Field(default_factory=BaselinesConfig)
    fidelity: FidelityConfig = Field(default_factory=FidelityConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    refine: RefineConfig = Field(default_factory=RefineConfig)
    metrics: MetricsConfig = Field(default_factory=MetricsConfig)
    engine: EngineConfig = Field(default_factory=EngineConfig)

    @field_validator("nfe", mode="before")
    @classmethod
    def _nfe(cls, value: Any) -> tuple[int, ...]:
        if isinstance(value, bool):
            raise ValueError("expected an integer, a list of integers or a range 'LO-HI'")
        if isinstance(value, int):
            values = [value]
        elif isinstance(value, str) and re.fullmatch(r"\s*\d+\s*-\s*\d+\s*", value):
            lo, hi = (int(v) for v in value.split("-"))
            values = list(range(lo, hi + 1))
        elif isinstance(value, str):
            try:
                values = [int(v) for v in value.split(",") if v.strip()]
            except ValueError:
                raise ValueError(f"{value!r}: expected an integer, a list or a range like '3-10'") from None
        elif isinstance(value, dict) and set(value) == {"min", "max"}:
            values = list(range(int(value["min"]), int(value["max"]) + 1))
        elif isinstance(value, list | tuple):
            values = list(value)
        else:
            raise ValueError("expected an integer, a list of integers or a range 'LO-HI'")
        if not values or any(not isinstance(v, int) or isinstance(v, bool) or not 1 <= v <= 50 for v in values):
            raise ValueError(f"{value!r}: every NFE must be an integer in 1..50")
        return tuple(sorted(set(values)))

    @field_validator("prompts", mode="before")
    @classmethod
    def _prompts(cls, value: Any) -> tuple[str, ...] | None:
        if value is None:
            return None
        if isinstance(value, str):  # a file, one prompt per line, read here: the stored config holds the prompts
            from schedsearch.solvers.pipelines import prompt_lines

            path = Path(value).expanduser()
            try:
                value = prompt_lines(path.read_text())
            except FileNotFoundError:
                raise ValueError(f"prompt file {path} not found") from None
            except (OSError, UnicodeDecodeError) as exc:
                reason = getattr(exc, "strerror", None) or type(exc).__name__
                raise ValueError(f"prompt file {path} cannot be read ({reason})") from None
            if not value:
                raise ValueError(f"prompt file {path} holds no prompts")
        if not isinstance(value, list | tuple) or not value or not all(isinstance(v, str) for v in value):
            raise ValueError("expected a non-empty list of prompts, or the path of a file of them (one per line)")
        return tuple(value)

    @field_validator("name")
    @classmethod
    def _name(cls, value: str | None) -> str | None:
        if value is not None and not re.fullmatch(r"[\w.-]{1,200}", value):
            raise ValueError(f"{value!r}: use letters, digits, '.', '_' and '-' (at most 200)")
        return value

    @field_validator("guidance_scale")
    @classmethod
    def _guidance(cls, value: float | None) -> float | None:
        if value is not None and not (value == value and abs(value) < 1e6):
            raise ValueError(f"{value}: not a finite number")
        return value

    @model_validator(mode="after")
    def _consistent(self) -> SearchConfig:
        if self.validation.samples < self.fidelity.samples[-1]:
            raise ValueError(f"validation.samples: {self.validation.samples} must be at least the highest fidelity "
                             f"({self.fidelity.samples[-1]})")
        if self.validation.seed == self.noise_seed:
            raise ValueError("validation.seed: the held-out noise must use another seed than noise_seed")
        if self.refine.enabled and self.refine.seed in (self.noise_seed, self.validation.seed):
            raise ValueError(f"refine.seed: the training noise must use another seed than the search noise "
                             f"({self.noise_seed}) and the held-out noise ({self.validation.seed})")
        if self.strategy.name == "nsga2" and len(self.nfe) < 2:
            raise ValueError("strategy.name: nsga2 trades quality against NFE; give several NFE (e.g. nfe: 3-10)")
        return self

    # -- conversions -------------------------------------------------------------------------

    def to_dict(self) -> dict[str, Any]:
        return self.model_dump(mode="json")

    def space_spec(self) -> SpaceSpec:
        """The typed search space of this config."""
        from schedsearch.solvers import AnalyticFirstStep, Corrector, Estimator, Prediction

        sp = self.space
        weights = sp.order_weights
        if weights is None:
            prior = {1: 0.2, 2: 0.4, 3: 0.3, 4: 0.1}
            weights = tuple(prior[o] for o in sp.orders)
        try:
            return SpaceSpec(
                nfe=self.nfe, free=frozenset(sp.free), orders=sp.orders, order_weights=tuple(weights),
                predictions=tuple(Prediction(p) for p in sp.predictions),
                estimators=tuple(Estimator(e) for e in sp.estimators),
                correctors=tuple(Corrector(c) for c in sp.correctors),
                analytic=tuple(None if a == "none" else AnalyticFirstStep(a) for a in sp.analytic),
                relaxation=sp.relaxation, max_points=sp.max_points, end_time=sp.end_time,
                base_solver=sp.base_solver, integer_times=sp.integer_times, time_sigma=sp.time_sigma,
                mutation_rate=sp.mutation_rate,
            )
        except SpaceError as exc:
            raise ConfigError(f"config space.{exc}") from None

    def evaluation_spec(self) -> EvaluationSpec:
        """What each worker builds its evaluators from."""
        m = self.metrics
        return EvaluationSpec(
            model=self.model, objective=self.objective, guidance_scale=self.guidance_scale,
            search_seed=self.noise_seed, search_samples=self.fidelity.samples[-1],
            holdout_seed=self.validation.seed, holdout_samples=self.validation.samples, device=self.engine.device,
            reference=m.reference, extractor=m.extractor, extractor_weights=m.extractor_weights,
            cache_dir=m.cache_dir, reference_steps=m.reference_steps, batch_size=m.batch_size,
            threads=self.engine.threads, prompts=self.prompts, negative_prompt=self.negative_prompt,
            clip_model=m.clip_model,
        )

    def comparable(self) -> dict[str, Any]:
        """The keys that define what is searched (not where it runs): must match on resume."""
        data = self.to_dict()
        for key in VOLATILE:
            data.pop(key, None)
        return data

    def with_overrides(self, **overrides: Any) -> SearchConfig:
        """A copy with CLI overrides applied (dotted keys for nested ones), validated again."""
        data = self.to_dict()
        for key, value in overrides.items():
            if value is None:
                continue
            target = data
            *parents, leaf = key.split(".")
            for p in parents:
                target = target.setdefault(p, {})
            target[leaf] = value
        return parse_config(data)


def _describe(error: ValidationError) -> str:
    first = error.errors()[0]
    where = ".".join(str(p) if str(p).isprintable() and str(p) else repr(str(p)) for p in first["loc"]) or "config"
    message = " ".join(str(first["msg"]).split())  # one line, whatever the input held
    if first["type"] == "extra_forbidden":
        return f"{where}: unknown key"
    if first["type"] == "missing":
        return f"{where}: missing (required)"
    message = re.sub(r"^Value error, ", "", message)
    return f"{where}: {message}"


def parse_config(data: Any) -> SearchConfig:
    """Validate a config mapping (from YAML or the store) into a :class:`SearchConfig`."""
    if not isinstance(data, dict):
        raise ConfigError(f"config: expected a mapping of keys, got {type(data).__name__}")
    try:
        return SearchConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(f"config {_describe(exc)}") from None


def load_config(path: str | Path) -> SearchConfig:
    """Read and validate a YAML config file; the search name defaults to the file's stem."""
    import yaml

    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"config file not found: {path}") from None
    except OSError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc.strerror}") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1})" if mark is not None else ""
        raise ConfigError(f"config file {path}: not valid YAML{where}") from None
    if isinstance(data, dict) and "name" not in data:
        data = {"name": path.stem, **data}
    prompts = data.get("prompts") if isinstance(data, dict) else None
    if isinstance(prompts, str) and not Path(prompts).expanduser().exists() and (path.parent / prompts).exists():
        data = {**data, "prompts": str(path.parent / prompts)}  # a prompt file named relative to the config
    return parse_config(data)
