"""``schedsearch predictor NAME``: how well a learned predictor ranks the search's schedules it never saw;
``--score FILE.json`` ranks schedules of one's own with it."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from .common import DB_HELP, UserError, at_least, output_path, read_text


def _predictor_config(args: argparse.Namespace) -> Any:
    from schedsearch.predictors.predictor import PredictorConfig

    return PredictorConfig(kind=args.kind, hidden=args.hidden, epochs=args.epochs, ensemble=args.ensemble,
                           probe=args.probe)


def _stored_predictor(store: Any, search: Any, noise_schedule: Any) -> tuple[Any, dict[str, Any]] | None:
    from schedsearch.predictors.predictor import Predictor

    from ..strategies.guided import PREDICTOR_ARTIFACT

    stored = store.get_artifact(search, PREDICTOR_ARTIFACT)
    if stored is None or "checkpoint" not in stored[1]:
        return None
    return Predictor.from_bytes(stored[0], stored[1]["checkpoint"], noise_schedule), stored[1]


def _read_schedules(path: str) -> list[Any]:
    from schedsearch.solvers import Schedule, ScheduleError

    try:
        data = json.loads(read_text(path, f"--score {path}"))
    except json.JSONDecodeError as exc:
        raise UserError(f"--score {path}: not JSON ({exc.msg}, line {exc.lineno})") from None
    if not isinstance(data, list) or not data:
        raise UserError(f"--score {path}: expected a non-empty JSON list of schedules")
    out = []
    for i, item in enumerate(data):
        try:
            out.append(Schedule.from_dict(item))
        except (ScheduleError, TypeError, ValueError, KeyError, AttributeError) as exc:
            raise UserError(f"--score {path}: schedule {i}: {exc}") from None
    return out


def _score(args: argparse.Namespace, store: Any, search: Any, model: Any) -> None:
    import torch
    from schedsearch.predictors.predictor import Predictor

    from ..queries import measured_schedules

    schedules = _read_schedules(args.score)
    for i, s in enumerate(schedules):
        try:
            s.check_for(model.noise_schedule)
        except ValueError as exc:
            raise UserError(f"--score {args.score}: schedule {i} does not fit {search.model_ref}: {exc}") from None
    stored = None if args.refit else _stored_predictor(store, search, model.noise_schedule)
    if stored is not None:
        predictor = stored[0]
    else:  # no checkpoint in the store (not a guided search): fit one on every measured schedule
        train, objectives = measured_schedules(store, search)
        if len(train) < 2:
            raise UserError(f"search {search.name!r} has {len(train)} measured schedules; a predictor needs at least 2")
        predictor = Predictor(model.noise_schedule, _predictor_config(args), guidance_scale=_guidance(search),
                              seed=args.seed, spectrum=_spectrum(args, search, model))
        predictor.fit(train, objectives, torch.Generator().manual_seed(args.seed))
    print(json.dumps([float(v) for v in predictor.predict(schedules)]))


def _spectrum(args: argparse.Namespace, search: Any, model: Any) -> Any:
    """The model's spectrum, measured as the guided search measures it (None with ``--no-spectrum``)."""
    from schedsearch.predictors.spectrum import model_spectrum
    from schedsearch.solvers import SolverError

    from ..loop import SPECTRUM_DRAWS

    if not args.spectrum:
        return None
    try:
        return model_spectrum(model, int(search.config.get("seed", 0)), _guidance(search), SPECTRUM_DRAWS)
    except SolverError as exc:
        print(f"schedsearch: note: the model's spectrum cannot be measured ({exc}); ranking without it",
              file=sys.stderr)
        return None


def _guidance(search: Any) -> float | None:
    value = search.config.get("guidance_scale")
    return None if value is None else float(value)


def _scatter(path: Path, objectives: list[float], cv: Any, objective: str, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    fig, ax = plt.subplots(figsize=(5.5, 4.5))
    obj = np.asarray(objectives)
    pred = np.asarray(cv.predicted)
    folds = np.asarray(cv.fold_of)
    for f in range(cv.folds):  # a fold's scores share one scale: standardise each before plotting them together
        m = folds == f
        spread = pred[m].std() or 1.0
        pred[m] = (pred[m] - pred[m].mean()) / spread
    ax.scatter(pred, obj, s=9, alpha=0.6)
    ax.set_xlabel("predicted score (held out, standardised per fold)")
    ax.set_ylabel(f"measured {objective}")
    if obj.size and obj.max() / max(obj.min(), 1e-12) > 30:
        ax.set_yscale("log")
    ax.set_title(title, fontsize=9)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _cmd_predictor(args: argparse.Namespace) -> None:
    from schedsearch.predictors.evaluation import cross_validate
    from schedsearch.solvers import load_model

    from ..queries import database_url, measured_schedules, open_read_only

    plot = None if args.plot == "-" else output_path("--plot", args.plot or f"predictor-{args.name}.png", ("png",))
    store = open_read_only(database_url(args.db))
    try:
        search = store.get_search(args.name)
        model = load_model(search.model_ref, device="cpu")
        if args.score is not None:
            _score(args, store, search, model)
            return
        schedules, objectives = measured_schedules(store, search)
        try:
            cv = cross_validate(schedules, objectives, model.noise_schedule, _predictor_config(args), args.folds,
                                args.seed, _guidance(search), _spectrum(args, search, model))
        except ValueError as exc:
            raise UserError(f"search {search.name!r}: {exc}") from None
        stored = _stored_predictor(store, search, model.noise_schedule)
    finally:
        store.close()
    out: dict[str, Any] = {"search": search.name, "objective": search.objective, **cv.to_dict(),
                           "loss_history": [[h[0], h[len(h) // 2], h[-1]] for h in cv.loss_history]}
    if stored is not None:
        meta = stored[1]
        out["stored"] = {k: meta.get(k) for k in ("round", "kendall_tau_train", "code_version")}
        out["stored"]["trials"] = len(meta.get("trials", []))
    if plot is not None:
        _scatter(plot, objectives, cv, search.objective,
                 f"{search.name}: held-out Kendall τ {cv.tau:.3f} ± {cv.tau_std:.3f} ({cv.folds}-fold, "
                 f"{cv.trials} trials)")
        out["plot"] = str(plot)
    if args.format == "json":
        print(json.dumps(out, indent=2))
        return
    print(_render(out))


def _render(out: dict[str, Any]) -> str:
    def f(v: Any) -> str:
        return "-" if v is None or v != v else f"{v:.3f}"

    lines = [f"predictor of {out['search']!r}: {out['trials']} measured schedules ({out['objective']}), "
             f"{out['folds']}-fold held-out Kendall τ {f(out['kendall_tau'])} ± {f(out['kendall_tau_std'])}",
             "", "NFE    predictor  higher-order  uniform-λ"]
    per = out["kendall_tau_per_nfe"]
    trivial = out["trivial_rankers_per_nfe"]
    for nfe in per:
        lines.append(f"{nfe:<6} {f(per[nfe]):>9}  {f(trivial['higher_order'].get(nfe)):>12}  "
                     f"{f(trivial['uniform_lambda'].get(nfe)):>9}")
    lines.append(f"{'all':<6} {f(out['kendall_tau']):>9}  {f(out['trivial_rankers']['higher_order']):>12}  "
                 f"{f(out['trivial_rankers']['uniform_lambda']):>9}")
    lines.append("")
    lines.append("training loss per fold (first → middle → last epoch): " +
                 "; ".join(" → ".join(f"{v:.3f}" for v in h) for h in out["loss_history"]))
    if "stored" in out:
        s = out["stored"]
        lines.append(f"stored checkpoint of the guided search: round {s['round']}, {s['trials']} trials, "
                     f"training τ {f(s['kendall_tau_train'])}, schedsearch {s['code_version']}")
    if "plot" in out:
        lines.append(f"wrote the predicted-vs-measured scatter to {out['plot']}")
    return "\n".join(lines)


def register(sub: Any) -> None:
    from schedsearch.predictors.kinds import KINDS

    p = sub.add_parser("predictor", help="held-out ranking quality of a learned predictor on a search's trials",
                       description="Fit the schedule predictor on a search's measured trials with k-fold "
                                   "cross-validation and print the held-out Kendall τ (overall and per NFE, next "
                                   "to trivial rankers), the training history, and a predicted-vs-measured scatter "
                                   "plot. With --score, print predicted scores for your own schedules instead.")
    p.add_argument("name", help="search name")
    p.add_argument("--score", metavar="FILE.json",
                   help="a JSON list of schedules: print their predicted scores as a JSON list in the same order "
                        "(lower = better; the guided search's stored predictor, else one fitted on all trials)")
    p.add_argument("--refit", action="store_true", help="--score with a predictor fitted now, not the stored one")
    p.add_argument("--format", choices=["text", "json"], default="text")
    p.add_argument("--plot", help="scatter plot PNG (default: predictor-NAME.png; '-' for none)")
    p.add_argument("--folds", type=at_least(2), default=5)
    p.add_argument("--kind", choices=list(KINDS), default="pool", help="the network: per-step MLP + pooling, or LSTM")
    p.add_argument("--hidden", type=at_least(4), default=64)
    p.add_argument("--epochs", type=at_least(1), default=300)
    p.add_argument("--ensemble", type=at_least(1), default=5, help="networks averaged (default 5)")
    p.add_argument("--probe", action=argparse.BooleanOptionalAction, default=True,
                   help="step features from the schedule's errors on Gaussian data (default: on; --no-probe ranks "
                        "about 4x faster, less well)")
    p.add_argument("--spectrum", action=argparse.BooleanOptionalAction, default=True,
                   help="step features from the schedule's errors on the model's own measured sensitivity "
                        "(default: on; measured once, seconds for the bundled models)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--db", help=DB_HELP)
    p.set_defaults(run=_cmd_predictor)
