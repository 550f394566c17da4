"""Learned refinement on held-out noise: the refined schedules against the best baseline, the unrefined
search winner and the model's 100-step floor, with the cost of each refinement — in one run.

For every (model, guidance, NFE) row a real search runs with its ``refine:`` stage on (search_quality.py's
row config, in-process): after the budget, the ``--refine-top`` best searched schedules and the
``--refine-baselines`` best baselines are refined against the teacher (the 100-step solve of a *training*
noise set, seed 2, apart from the search noise 0 and the held-out noise 1), then every candidate is measured
on the same held-out noise. Refinement minimises the L2 distance to the teacher; the table reports the
search objective (FID / MMD, which refinement never sees) and metrics neither the search nor the refinement
optimised (FID in an independently trained classifier's features, class accuracy; NLL for the mixture). Per
metric: the best baseline, the best unrefined searched schedule, the best refined one, the floor, the ratio
refined / best baseline and the share of the gap (best baseline − floor) each closes.

Guided rows (guidance ≠ 1) measure FID against samples of the guided 100-step solve (``--guided-reference
teacher``, the default; 5,000 of them, sampled once into ``--cache-dir``): guidance moves the model's
distribution away from the data — at guidance 2 the 100-step "floor" has a worse FID against the data than
few-step baselines — so the gap to the floor is only defined against the guided model's own distribution,
which is also what refinement pulls towards. The search of such a row optimises that FID too.

    .venv/bin/python benchmarks/refine.py                          # digits g1, g2 at NFE 3-5; gmm-8d at NFE 3-10
    .venv/bin/python benchmarks/refine.py --rows digits:1:5 --budget 60
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from schedsearch.search.config import parse_config
from schedsearch.search.engines import LocalEngine
from schedsearch.search.loop import SearchRun
from schedsearch.search.refine_defaults import DISTANCES, REFINE_DEFAULTS
from schedsearch.search.results import summarize
from schedsearch.storage import Stage, TrialState, TrialStore

sys.path.insert(0, str(Path(__file__).parent))
from search_quality import gap, row_config, run_rows  # noqa: E402  (one row config for both benchmarks)

ROWS = [f"digits:{g}:{n}" for g in (1, 2) for n in (3, 4, 5)] + [f"gmm-8d:1:{n}" for n in range(3, 11)]
SHOWN = {"digits": ("fid", "fid_b", "accuracy", "recall"), "gmm-8d": ("mmd", "nll")}
COLUMNS = ("baseline", "searched", "refined")


def run_row(spec: str, args: argparse.Namespace, workdir: Path) -> dict:
    model, guidance, nfe = spec.split(":")
    data = row_config(model, float(guidance), int(nfe), args)
    if float(guidance) != 1 and args.guided_reference == "teacher":
        data["metrics"] = {"reference": str(teacher_samples(model, float(guidance), args))}
    data["refine"] = {"top_k": args.refine_top, "baselines": args.refine_baselines, "iterations": args.iterations,
                      "samples": args.train_samples, "batch_size": args.batch_size, "distance": args.distance}
    config = parse_config(data)
    store = TrialStore.open(f"sqlite:///{workdir / 'bench.db'}")
    start, cpu = time.time(), time.process_time()
    outcome = SearchRun(config, store, LocalEngine(config.evaluation_spec())).run()
    store.close()
    minutes, cpu_minutes = (time.time() - start) / 60, (time.process_time() - cpu) / 60
    s = summarize(outcome.trials, outcome.objective, outcome.floor)[int(nfe)]
    by_number = {t.number: t for t in outcome.trials}
    refined = [r for r in s.searched if by_number[r.trial].stage is Stage.REFINE and r.holdout is not None]
    searched = [r for r in s.searched if by_number[r.trial].stage is not Stage.REFINE and r.holdout is not None]
    best = {"baseline": s.best_baseline, "searched": searched[0] if searched else None,
            "refined": refined[0] if refined else None}  # each list is sorted best first on the held-out objective
    jobs = [t for t in outcome.trials if t.stage is Stage.REFINE]
    floor = s.floor.get("holdout", {})
    out = {"row": spec, "objective": outcome.objective, "minutes": minutes, "cpu_minutes": cpu_minutes,
           "evaluations": len([t for t in outcome.trials if t.stage is not Stage.REFINE]),
           "labels": {k: (v.label if v is not None else None) for k, v in best.items()},
           "winner": s.winner.label if s.winner else None,
           "refinements": [{"from": by_number[t.meta["refined_from"]].number, "failed": t.state is TrialState.FAILED,
                            **{k: v for k, v in t.meta.get("refine", {}).items()}} for t in jobs],
           "metrics": {}}
    for m in SHOWN[model]:
        if m not in floor or any(v is None or m not in v.metrics for v in best.values()):
            continue
        base = best["baseline"].metrics[m]
        out["metrics"][m] = {"floor": floor[m], **{c: best[c].metrics[m] for c in COLUMNS},
                             **{f"gap_{c}": gap(m, best[c].metrics[m], base, floor[m]) for c in COLUMNS[1:]},
                             "ratio": best["refined"].metrics[m] / base if base else None}
    return out


def teacher_samples(model_name: str, guidance: float, args: argparse.Namespace) -> Path:
    """``--teacher-samples`` draws of the guided 100-step solve (noise seed 7, apart from the search's 0, the
    held-out 1 and refinement's 2), clamped to [-1, 1]: the guided model's own distribution, which a guided row's
    FID is measured against. Sampled once per model and scale into ``--cache-dir``."""
    import torch
    from schedsearch.search.noise_set import NoiseSet
    from schedsearch.solvers import baseline, load_model, sample

    path = Path(args.cache_dir).expanduser() / f"teacher-{model_name}-g{guidance:g}-n{args.teacher_samples}-s7.pt"
    if path.exists():
        return path
    model = load_model(f"builtin:{model_name}")
    teacher = baseline("dpmpp_3m", 100, model)
    draws = NoiseSet.draw(model.sample_shape, args.teacher_samples, 7, model.num_classes, model.state_dtype)
    start, chunks = time.time(), []
    for i in range(0, len(draws), 500):
        cond = None if draws.labels is None else draws.labels[i:i + 500]
        chunks.append(sample(model, teacher, draws.noise[i:i + 500], cond=cond, guidance_scale=guidance).clamp(-1, 1))
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save(torch.cat(chunks).cpu(), path.with_suffix(".tmp"))
    path.with_suffix(".tmp").rename(path)
    print(f"reference of the guided rows: {args.teacher_samples} samples of the 100-step solve at guidance "
          f"{guidance:g} ({time.time() - start:.0f} s) in {path}", flush=True)
    return path


def print_row(r: dict) -> None:
    seconds = [x["seconds"] for x in r["refinements"] if x.get("seconds") is not None]
    print(f"{r['row']:<14} objective {r['objective']}: baseline {r['labels']['baseline']}, searched "
          f"{r['labels']['searched']}, refined {r['labels']['refined']}; winner {r['winner']}; "
          f"{r['evaluations']} evaluations + {len(r['refinements'])} refinements "
          f"({', '.join(f'{v:.0f}' for v in seconds)} s), {r['minutes']:.1f} min in all, "
          f"{r['cpu_minutes']:.1f} CPU min")
    print(f"  {'metric':<9}{'floor':>10}{'baseline':>10}{'searched':>10}{'refined':>10}{'ratio':>8}"
          f"{'gap s.':>8}{'gap r.':>8}")
    for m, v in r["metrics"].items():
        def pct(x: float | None) -> str:
            return f"{100 * x:>7.0f}%" if x is not None else f"{'—':>8}"

        print(f"  {m:<9}{v['floor']:>10.4g}{v['baseline']:>10.4g}{v['searched']:>10.4g}{v['refined']:>10.4g}"
              f"{(v['ratio'] or float('nan')):>8.3f}{pct(v['gap_searched'])}{pct(v['gap_refined'])}")
    sys.stdout.flush()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", default=",".join(ROWS), help="comma-separated model:guidance:nfe")
    parser.add_argument("--budget", type=int, default=200, help="search evaluations per row")
    parser.add_argument("--strategy", default="evolution")
    parser.add_argument("--objective", default=None)
    parser.add_argument("--samples", type=lambda t: [int(v) for v in t.split(",")], default=[250, 1000])
    parser.add_argument("--holdout", type=int, default=2000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--refine-top", type=int, default=2, help="searched schedules refined per row")
    parser.add_argument("--refine-baselines", type=int, default=1, help="baselines refined per row")
    parser.add_argument("--iterations", type=int, default=REFINE_DEFAULTS["iterations"], help="refinement steps")
    parser.add_argument("--train-samples", type=int, default=REFINE_DEFAULTS["samples"],
                        help="training draws of the teacher")
    parser.add_argument("--batch-size", type=int, default=REFINE_DEFAULTS["batch_size"],
                        help="draws per refinement step")
    parser.add_argument("--distance", choices=DISTANCES, default=REFINE_DEFAULTS["distance"],
                        help="the data-space distance to the teacher")
    parser.add_argument("--guided-reference", choices=("teacher", "data"), default="teacher",
                        help="what guided rows measure FID against: samples of the guided 100-step solve (the "
                             "guided model's own distribution, which refinement pulls towards) or the data")
    parser.add_argument("--teacher-samples", type=int, default=5000, help="samples of that guided reference")
    parser.add_argument("--cache-dir", default="~/.cache/schedsearch/bench", help="where the guided reference is kept")
    parser.add_argument("--json", help="append every row as a JSON line here")
    run_rows(parser.parse_args(), run_row, print_row)


if __name__ == "__main__":
    main()
