"""A search as one self-contained HTML page: progress, winners drawn, the baseline comparison.

Plots are the PNGs of :mod:`search.report`, embedded as data URIs; no script, no style
sheet or font from the network — the file opens anywhere, offline, and can be mailed.
"""

from __future__ import annotations

import base64
import html
import json
import tempfile
from collections.abc import Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from schedsearch.solvers import NoiseSchedule
from schedsearch.storage import SearchRecord, TrialRecord

from .report import plot_progress, plot_quality_vs_nfe, plot_schedules
from .results import NfeSummary, summary_table

_STYLE = """
body { font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1100px; color: #222; }
h1 { font-size: 1.5em; } h2 { font-size: 1.2em; margin-top: 2em; border-bottom: 1px solid #ccc; }
table { border-collapse: collapse; margin: 0.8em 0; font-size: 0.9em; }
th, td { padding: 0.25em 0.7em; border-bottom: 1px solid #eee; text-align: right; }
th:first-child, td:first-child { text-align: left; }
tr.winner { background: #e8f4e8; font-weight: bold; } tr.floor { color: #777; }
img { max-width: 100%; } .verdict { font-weight: bold; } pre { background: #f6f6f6; padding: 0.8em; overflow: auto; }
dl { display: grid; grid-template-columns: max-content auto; gap: 0.2em 1em; } dt { color: #666; }
"""


def _img(path: Path, alt: str) -> str:
    data = base64.b64encode(path.read_bytes()).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


def _table(header: Sequence[str], rows: Sequence[Sequence[str]], winner_row: int | None) -> str:
    out = ["<table>", "<tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in header) + "</tr>"]
    for i, row in enumerate(rows):
        cls = ' class="winner"' if i == winner_row else (' class="floor"' if i == len(rows) - 1 else "")
        label = row[0] + (" ◀ winner" if i == winner_row else "")
        cells = [label, *row[1:]]
        out.append(f"<tr{cls}>" + "".join(f"<td>{html.escape(c)}</td>" for c in cells) + "</tr>")
    out.append("</table>")
    return "\n".join(out)


def render_report(
    search: SearchRecord,
    config: Any,
    trials: Sequence[TrialRecord],
    summaries: Mapping[int, NfeSummary],
    noise_schedule: NoiseSchedule,
    counts: Mapping[str, int],
) -> str:
    """The whole page for ``search`` (plots drawn into a temporary folder and embedded)."""
    objective = search.objective
    parts = [f"<h1>schedsearch: search {html.escape(search.name)}</h1>", "<dl>"]
    facts = {
        "model": config.model, "status": search.status, "objective": objective,
        "NFE": ", ".join(map(str, config.nfe)), "strategy": config.strategy.name,
        "budget": f"{config.budget} evaluations", "trials": ", ".join(f"{n} {s}" for s, n in counts.items()),
        "search noise": f"seed {config.noise_seed}, {', '.join(map(str, config.fidelity.samples))} samples (fidelity levels)",
        "held-out noise": f"seed {config.validation.seed}, {config.validation.samples} samples",
        "report written": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
    }
    parts += [f"<dt>{html.escape(k)}</dt><dd>{html.escape(str(v))}</dd>" for k, v in facts.items()]
    parts.append("</dl>")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        level = config.fidelity.samples[0]
        progress = plot_progress(trials, objective, level, folder / "progress.png", f"{search.name}: {objective}")
        parts += ["<h2>Progress</h2>",
                  (f"<p>Every evaluated schedule at {level} samples of the search noise, the best so far, and the "
                   "best baseline.</p>"), _img(progress, "progress: objective by trial")]
        if len(summaries) > 1:
            quality = plot_quality_vs_nfe(summaries, folder / "quality.png", f"{search.name}: quality vs NFE")
            parts += ["<h2>Quality vs NFE</h2>", _img(quality, "quality vs NFE")]
        for nfe, s in summaries.items():
            t = summary_table(s, config.noise_seed, config.validation.seed, config.validation.samples)
            parts += [f"<h2>NFE {nfe}</h2>", f"<p>{html.escape(t.heading)}</p>",
                      _table(t.header, t.rows, t.winner_row)]
            if t.verdict:
                parts.append(f'<p class="verdict">{html.escape(t.verdict)}</p>')
            if s.winner is not None:
                drawn = plot_schedules(s, noise_schedule, folder / f"schedule{nfe}.png",
                                       f"NFE {nfe}: winner and best baseline")
                parts += [_img(drawn, f"NFE {nfe}: the winning schedule"),
                          (f"<details><summary>winning schedule JSON ({html.escape(s.winner.label)})</summary>"
                           f"<pre>{html.escape(json.dumps(dict(s.winner.schedule), indent=2))}</pre></details>")]
    body = "\n".join(parts)
    return (f'<!DOCTYPE html>\n<html lang="en"><head><meta charset="utf-8">'
            f"<title>schedsearch: {html.escape(search.name)}</title><style>{_STYLE}</style></head>\n"
            f"<body>\n{body}\n</body></html>\n")
