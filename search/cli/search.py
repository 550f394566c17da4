"""``schedsearch search | resume | report``: run a search, continue it, look at it."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from .common import DB_HELP

EXIT_INTERRUPTED = 130


class _Progress:
    """tqdm bars on stderr: the search (true evaluations vs budget, live best per NFE), then validation."""

    def __init__(self, enabled: bool, objective: str) -> None:
        self.enabled, self.objective = enabled, objective
        self.bar: Any = None

    def start(self, spent: int, budget: int) -> None:
        self._open("search", budget, spent)

    def stage(self, name: str, total: int) -> None:
        self._open(name, total, 0, "it" if name == "refine" else "eval")

    def refine(self, advance: int, loss: float | None) -> None:
        if self.bar is None:
            return
        self.bar.update(advance)
        if loss is not None:
            self.bar.set_postfix_str(f"validation loss {loss:.4g}", refresh=False)

    def _open(self, desc: str, total: int, initial: int, unit: str = "eval") -> None:
        from tqdm import tqdm

        self.close()
        self.bar = tqdm(total=total, initial=initial, desc=desc, unit=unit, file=sys.stderr, dynamic_ncols=True,
                        disable=not self.enabled)

    def result(self, trial: Any, best: dict[int, float]) -> None:
        if self.bar is None:
            return
        self.bar.update(1)
        if best:
            text = " ".join(f"NFE{n}={v:.4g}" for n, v in sorted(best.items()))
            self.bar.set_postfix_str(f"best {self.objective} {text}", refresh=False)

    def note(self, text: str) -> None:
        if self.enabled:
            from tqdm import tqdm

            tqdm.write(text, file=sys.stderr)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()
            self.bar = None

    def callbacks(self) -> Any:
        from ..loop import SearchProgress

        return SearchProgress(on_start=self.start, on_result=self.result, on_stage=self.stage, on_close=self.close,
                              on_refine=self.refine, on_note=self.note)


def _overrides(args: argparse.Namespace) -> dict[str, Any]:
    out: dict[str, Any] = {
        "name": getattr(args, "name", None), "db": args.db, "budget": args.budget,
        "seed": getattr(args, "seed", None), "output": args.output,
        "engine.kind": args.engine, "engine.ray_address": args.ray_address, "engine.num_workers": args.num_workers,
        "engine.device": args.device, "refine.top_k": args.refine,
    }
    if getattr(args, "nfe", None) is not None:
        out["nfe"] = args.nfe
    for option, key in (("model", "model"), ("clip_model", "metrics.clip_model")):
        if getattr(args, option, None) is not None:
            out[key] = getattr(args, option)
    if getattr(args, "strategy", None) is not None:
        out["strategy.name"] = args.strategy
    return out


def _configured(config: Any, args: argparse.Namespace) -> Any:
    """The config with the command line's overrides; ``--ray-address`` moves an in-process search to Ray."""
    config = config.with_overrides(**_overrides(args))
    if args.ray_address and not args.engine and config.engine.kind == "local":
        config = config.with_overrides(**{"engine.kind": "ray"})
    return config


def _run(config: Any, quiet: bool) -> None:
    from schedsearch.storage import TrialStore

    from ..engines import EngineLost, make_engine
    from ..loop import SearchRun
    from ..queries import database_url

    url = database_url(config.db)
    store = TrialStore.open(url)
    try:
        engine = make_engine(config)
        try:
            objective = engine.info()["objective"]
            progress = _Progress(not quiet, objective)
            run = SearchRun(config, store, engine, progress.callbacks())
            verb = "resuming" if run.resumed else "starting"
            print(f"{verb} search {config.name!r}: {config.model}, NFE {','.join(map(str, config.nfe))}, "
                  f"strategy {config.strategy.name}, budget {config.budget} evaluations, {engine.describe()}, "
                  f"database {url}", file=sys.stderr)
            try:
                outcome = run.run()
            except KeyboardInterrupt:
                progress.close()
                print(f"schedsearch: interrupted; resume with: schedsearch resume {config.name} --db {url}",
                      file=sys.stderr)
                raise SystemExit(EXIT_INTERRUPTED) from None
            except EngineLost as exc:
                progress.close()
                print(f"schedsearch: error: {exc}; nothing completed is lost — resume with: schedsearch resume "
                      f"{config.name} --db {url} [--ray-address ADDRESS]", file=sys.stderr)
                raise SystemExit(1) from None
        finally:
            engine.close()
        _present(store, outcome.search, config, outcome.trials, outcome.objective, outcome.floor, run.model)
    finally:
        store.close()


def _present(store: Any, search: Any, config: Any, trials: Any, objective: str, floor: Any, model: Any) -> None:
    """The table, the exported winners and the plots."""
    import json

    from ..queries import export_best
    from ..report import plot_progress, plot_quality_vs_nfe, plot_schedules
    from ..results import format_summary, summarize

    summaries = summarize(trials, objective, floor)
    print(format_summary(summaries, config.noise_seed, config.validation.seed, config.validation.samples))
    out = Path(config.output or Path("runs") / search.name)
    out.mkdir(parents=True, exist_ok=True)
    written = []
    for nfe in summaries:
        try:
            data = export_best(store, search, nfe)
        except Exception:  # noqa: BLE001 - nothing complete at this NFE
            continue
        path = out / f"best_nfe{nfe}.json"
        path.write_text(json.dumps(data, indent=2) + "\n")
        written.append(str(path))
    level = config.fidelity.samples[0]
    plots = [plot_progress(trials, objective, level, out / "progress.png", f"{search.name}: {objective} by trial")]
    for nfe, s in summaries.items():
        if s.winner is not None:
            plots.append(plot_schedules(s, model.noise_schedule, out / f"schedule_nfe{nfe}.png",
                                        f"{search.name}, NFE {nfe}: winner and best baseline"))
    if len(summaries) > 1:
        plots.append(plot_quality_vs_nfe(summaries, out / "quality_vs_nfe.png", f"{search.name}: quality vs NFE"))
    print(f"best schedule{'s' if len(written) > 1 else ''}: {', '.join(written) or 'none'}")
    print(f"plots: {', '.join(map(str, plots))}")


def _cmd_search(args: argparse.Namespace) -> None:
    from ..config import load_config

    config = _configured(load_config(args.config), args)
    _run(config, args.quiet)


def _cmd_resume(args: argparse.Namespace) -> None:
    from schedsearch.storage import TrialStore

    from ..config import parse_config
    from ..queries import database_url

    url = database_url(args.db)
    store = TrialStore.open(url, create=False)
    try:
        stored = store.get_search(args.name)
    finally:
        store.close()
    config = _configured(parse_config(stored.config).with_overrides(db=url), args)
    _run(config, args.quiet)


def _cmd_report(args: argparse.Namespace) -> None:
    from schedsearch.solvers import load_model

    from ..config import parse_config
    from ..loop import FLOOR_ARTIFACT
    from ..queries import database_url, open_read_only

    page = None
    if args.output and args.output.lower().endswith((".html", ".htm")):
        from .common import output_path

        page = output_path("-o/--output", args.output)
    store = open_read_only(database_url(args.db))
    try:
        search = store.get_search(args.name)
        config = parse_config(search.config)
        if args.output and page is None:
            config = config.with_overrides(output=args.output)
        trials = store.trials(search)
        floor = store.get_artifact(search, FLOOR_ARTIFACT)
        counts = {s.value: n for s, n in store.count_trials(search).items() if n}
        model = load_model(config.model, device="cpu")
        if page is not None:
            from ..html_report import render_report
            from ..results import summarize

            summaries = summarize(trials, search.objective, {} if floor is None else floor[1])
            page.write_text(render_report(search, config, trials, summaries, model.noise_schedule, counts))
            print(f"wrote the report of {search.name!r} ({search.status}, trials {counts}) to {page}")
            return
        print(f"search {search.name!r} ({search.status}): {config.model}, NFE {','.join(map(str, config.nfe))}, "
              f"trials {counts}")
        _present(store, search, config, trials, search.objective, {} if floor is None else floor[1], model)
    finally:
        store.close()


def register(sub: Any) -> None:
    from .common import at_least, positive_ints_arg

    def common(p: argparse.ArgumentParser) -> None:
        p.add_argument("--db", help=DB_HELP)
        p.add_argument("--budget", type=at_least(1), help="true evaluations on the search noise (baselines included)")
        p.add_argument("--engine", choices=["local", "ray", "tune"],
                       help="in-process, a pool of Ray actors, or Ray Tune with ASHA early stopping")
        p.add_argument("--ray-address",
                       help="a running Ray cluster (e.g. auto or HOST:PORT); moves an in-process search to --engine ray")
        p.add_argument("--num-workers", type=at_least(1), help="Ray workers (default: one per GPU, else per CPU)")
        p.add_argument("--device", help="torch device of the workers (default: cuda if available)")
        p.add_argument("--refine", type=at_least(0), metavar="K",
                       help="after the search, learn the times and coefficients of the K best searched schedules "
                            "per NFE against the teacher (refine.top_k; 0: none); resume a finished search with it "
                            "to refine its winners")
        p.add_argument("-o", "--output", help="folder for the exported schedules and plots (default: runs/NAME)")
        p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")

    p = sub.add_parser("search", help="search the best schedule for a model (config: YAML, see configs/)")
    p.add_argument("config", help="search config (YAML)")
    p.add_argument("--name", help="search name (default: the config's name, else the file name)")
    p.add_argument("--nfe", type=positive_ints_arg, help="NFE to search, comma-separated (overrides the config)")
    p.add_argument("--strategy", help="random, evolution, generational, tpe, cmaes, nsga2 or gp")
    p.add_argument("--seed", type=int, help="seed of the strategy")
    p.add_argument("--model", help="the model to search (overrides the config's: a directory, hub id or builtin:NAME)")
    p.add_argument("--clip-model", help="a local CLIPModel directory for clip_score (overrides metrics.clip_model)")
    common(p)
    p.set_defaults(run=_cmd_search)

    p = sub.add_parser("resume", help="continue an interrupted search (or extend one with --budget)")
    p.add_argument("name", help="search name")
    common(p)
    p.set_defaults(run=_cmd_resume)

    p = sub.add_parser("report", help="a search's table, exported winners and plots (read-only)")
    p.add_argument("name", help="search name")
    p.add_argument("--db", help=DB_HELP)
    p.add_argument("-o", "--output", help="folder for the plots and schedules (default: runs/NAME), or a file "
                                         "ending in .html: one self-contained HTML report")
    p.set_defaults(run=_cmd_report)
