"""``report.html``: one self-contained page from the results of ``iclab reproduce`` or of one ``iclab run``.

Opens with the count of each verdict per study. Reads ``DIR/reproduce.json`` (or, in a study's own folder,
``DIR/study.json``) and each ``DIR/<study>/summary.json`` (the typed
:class:`~iclab.studies.common.Summary`, plus its figures and config.yaml; one
written by an older iclab is shown with a "re-run" line) and writes ``DIR/report.html``: per study, the
paper's claims next to what this run measured, the figures (embedded as
base64, so the page needs no network and no other file), the summary numbers,
the settings, run times and software versions. A study that failed shows its
error; the rest still report. Nothing here computes results.
"""

from __future__ import annotations

import base64
import html
import json
import struct
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from iclab.claims import SHOWS_WHY, Claim, Differs, Verdict, plural
from iclab.errors import OlderFormatError, RunDirError
from iclab.io import atomic_write_text
from iclab.results import encode
from iclab.studies.common import Summary

def _device(record: dict[str, Any]) -> str:
    """`` · device X`` for a reproduction (which records it); nothing for one study's folder (which does not)."""
    return f" &middot; device {html.escape(record['device'])}" if "device" in record else ""


CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1400px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;width:100%;margin:.5em 0} td,th{border:1px solid #ddd;padding:.35em .5em;vertical-align:top;text-align:left}
.badge{display:inline-block;padding:.1em .5em;border-radius:.6em;font-size:.85em;white-space:nowrap}
.good{background:#d7f5dd;color:#185c2a}.bad{background:#fbdada;color:#7a1616}.info{background:#e3ecfb;color:#1b3f7a}.na{background:#f3ead3;color:#6b5210}
.fig{display:inline-block;margin:.5em;vertical-align:top;text-align:center;font-size:.85em}.fig img{max-width:520px;border:1px solid #eee;cursor:zoom-in}
.fig.full{display:block}.fig.full img{max-width:100%;cursor:zoom-out}
.counts td{text-align:center}.counts td:first-child{text-align:left}
pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.8em;max-height:420px} .muted{color:#777}
table.values{width:auto;margin:.2em 0;font-size:.85em} table.values td{padding:.1em .4em;border-color:#eee}
.takeaway{font-size:1.05em;background:#f6f8fa;border-left:4px solid #bbb;padding:.4em .7em}
.claims{table-layout:fixed} .claims td{overflow-wrap:anywhere} .claims .scroll{overflow-x:auto}
.claims table.values td,.claims table.values th{overflow-wrap:normal;white-space:nowrap}
.claims th:first-child{width:8em} .claims th:nth-child(2){width:17%} .claims th:nth-child(4){width:22%}
"""

IMAGE_CHECK = """
window.addEventListener('load', function () {
  var imgs = document.querySelectorAll('img'), ok = 0;
  imgs.forEach(function (im) { var good = im.complete && im.naturalWidth > 0; im.setAttribute('data-loaded', good ? '1' : '0'); if (good) ok++; });
  document.body.setAttribute('data-images-total', imgs.length);
  document.body.setAttribute('data-images-loaded', ok);
  document.querySelectorAll('.fig img').forEach(function (im) {  // a click shows a figure at full width, another shrinks it
    im.addEventListener('click', function () { im.parentNode.classList.toggle('full'); });
  });
});
"""


BADGES = {  # verdict -> (label, css class)
    Verdict.REPRODUCED: ("reproduced", "good"),
    Verdict.NOT_REPRODUCED: ("not reproduced", "bad"),
    Verdict.MEASURED: ("measured", "info"),
    Verdict.NOT_APPLICABLE: ("not applicable", "na"),
    Verdict.INCONCLUSIVE: ("inconclusive", "na"),
}


WIDE_FIGURE_PX = 1200  # a PNG wider than this, or more than WIDE_ASPECT times as wide as tall, spans the page's width
WIDE_ASPECT = 2.0


def _value(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.4g}"


def _claim_row(claim: Claim) -> str:
    """verdict | the paper's claim (and its source) | what this run measured: the numbers by name, then in words | why it
    may not hold (for a claim that does not) and the thresholds the verdict used."""
    label, css = BADGES[claim.verdict]
    source = f'<br><span class="muted">{html.escape(claim.source)}</span>' if claim.source else ""
    words = html.escape(claim.measured)
    if claim.per_seed:  # judged over seeds: a column per seed (its verdict on top), then their mean
        head = "".join(f'<th>seed {a.seed}<br><span class="badge {BADGES[a.verdict][1]}">{BADGES[a.verdict][0]}</span></th>'
                       for a in claim.per_seed)
        rows = "".join(f"<tr><td>{html.escape(k)}</td>" + "".join(f"<td>{_value(a.values.get(k))}</td>" for a in claim.per_seed)
                       + f"<td>{_value(v)}</td></tr>" for k, v in claim.values.items())
        said = "".join(f"<li>seed {a.seed}: {html.escape(a.measured)}</li>" for a in claim.per_seed)
        measured = (f'<div class="scroll"><table class="values"><tr><th></th>{head}<th>mean</th></tr>{rows}</table></div>'
                    f"<details><summary>in words, per seed</summary><ul>{said}</ul></details>")
    elif claim.values:
        table = "".join(f"<tr><td>{html.escape(k)}</td><td>{_value(v)}</td></tr>" for k, v in claim.values.items())
        measured = f'<div class="scroll"><table class="values">{table}</table></div><details><summary>in words</summary>{words}</details>'
    else:
        measured = words
    why = ""
    if claim.why is not None and claim.verdict in SHOWS_WHY:
        why = f"<b>{html.escape(claim.why.differs_by.value)}</b>: {html.escape(claim.why.text)}"
    limits = ", ".join(f"{k} = {v}" for k, v in claim.thresholds.items())
    limits = f'<br><span class="muted">thresholds: {html.escape(limits)}</span>' if limits else ""
    return (f'<tr><td><span class="badge {css}">{label}</span></td><td>{html.escape(claim.statement)}{source}</td>'
            f"<td>{measured}</td><td>{why}{limits}</td></tr>")


def takeaway(claims: list[Claim]) -> str:
    """One line for a study: how many of the paper's claims reproduced, and what kind of reason each that did not has,
    e.g. "7 of 10 claims reproduced; 3 not (scale 2, recipe 1); 3 measurements"."""
    judged = [c for c in claims if c.verdict in (Verdict.REPRODUCED, Verdict.NOT_REPRODUCED, Verdict.INCONCLUSIVE)]
    failed = [c for c in claims if c.verdict is Verdict.NOT_REPRODUCED]
    line = (f"{sum(c.verdict is Verdict.REPRODUCED for c in judged)} of {len(judged)} claims reproduced" if judged
            else "no claim judged")
    if failed:
        kinds = [(d.value, sum(c.why is not None and c.why.differs_by is d for c in failed)) for d in Differs]
        line += f"; {len(failed)} not (" + ", ".join(f"{kind} {n}" for kind, n in kinds if n) + ")"
    split = sum(c.verdict is Verdict.INCONCLUSIVE for c in claims)
    if split:
        line += f"; {split} inconclusive (the seeds disagree)"
    na = sum(c.verdict is Verdict.NOT_APPLICABLE for c in claims)
    if na:
        line += f"; {na} not applicable on this model"
    n_measured = sum(c.verdict is Verdict.MEASURED for c in claims)
    if n_measured:
        line += f"; {n_measured} measurement{'s' if n_measured != 1 else ''} without a verdict"
    return line


def png_size(path: Path) -> tuple[int, int] | None:
    """(width, height) in pixels from a PNG's header (its IHDR chunk); None for anything else."""
    with open(path, "rb") as f:
        head = f.read(24)
    if len(head) < 24 or head[:8] != b"\x89PNG\r\n\x1a\n" or head[12:16] != b"IHDR":
        return None
    return struct.unpack(">II", head[16:24])


def _figure(path: Path) -> str:
    name = html.escape(path.stem.replace("_", " "))
    if path.suffix == ".html":  # an HTML figure (a fragment the study wrote, e.g. coloured text): embedded as it is
        return f'<div class="fig wide">{path.read_text()}<br>{name}</div>'
    size = png_size(path)
    wide = size is not None and (size[0] > WIDE_FIGURE_PX or size[0] > WIDE_ASPECT * size[1])
    data = base64.b64encode(path.read_bytes()).decode()
    title = "click: smaller" if wide else "click: full size"
    return (f'<div class="fig{" full" if wide else ""}"><img alt="{name}" title="{title}" '
            f'src="data:image/png;base64,{data}"><br>{name}</div>')


def _numbers(summary: Summary) -> str:
    return html.escape(json.dumps({"identity": encode(summary.identity), **summary.numbers}, indent=1)[:200_000])


Loaded = Summary | str | None  # a study's summary, why there is none to show (a "re-run" line), or None: it failed


def _load(entry: dict[str, Any], folder: Path) -> Loaded:
    """A study's summary for the page. One written by an older iclab is a "re-run" line; one that is damaged (not
    JSON, not a summary) stops the report before anything is written, so the page there stays as it was."""
    if entry.get("status") == "failed":
        return None
    summary_file = folder / "summary.json"
    if not summary_file.is_file():
        return "summary.json is missing."
    try:
        return Summary.load(summary_file)
    except OlderFormatError as err:
        return str(err)
    except RunDirError as err:
        raise RunDirError(f"{err}; report.html not written (the one there is as it was)") from None


def _study_section(name: str, entry: dict[str, Any], folder: Path, summary: Loaded) -> str:
    title = html.escape(entry.get("title", name))
    head = f'<h2 id="{name}">{html.escape(name)}: {title}</h2><p class="muted">{html.escape(entry.get("paper", ""))}'
    if "wall_time_s" in entry:
        head += f" &middot; run time {entry['wall_time_s']} s"
    if "peak_memory_gb" in entry:
        head += f" &middot; peak memory {entry['peak_memory_gb']} GB"
    head += "</p>"
    if summary is None:
        return head + f'<p><span class="badge bad">failed</span> {html.escape(entry.get("error", ""))}</p><pre>{html.escape(entry.get("traceback", ""))}</pre>'
    if isinstance(summary, str):
        return head + f'<p><span class="badge bad">re-run</span> {html.escape(summary)}</p>'
    rows = [_claim_row(c) for c in summary.claims]
    parts = [head, f'<p class="takeaway">{html.escape(takeaway(summary.claims))}.</p>',
             "<h3>The paper's claims and this run</h3>",
             '<table class="claims"><tr><th>verdict</th><th>claim</th><th>measured</th><th>why not, and thresholds</th></tr>'
             f"{''.join(rows)}</table>"]
    figures = [folder / f for f in summary.figures if (folder / f).is_file()]
    if figures:
        parts.append("<h3>Figures</h3>" + "".join(_figure(f) for f in figures))
    if summary.notes:
        parts.append("<h3>Notes</h3><ul>" + "".join(f"<li>{html.escape(n)}</li>" for n in summary.notes) + "</ul>")
    if summary.timings_s:
        parts.append("<h3>Run times (s)</h3><table>" + "".join(f"<tr><td>{html.escape(k)}</td><td>{v}</td></tr>" for k, v in summary.timings_s.items()) + "</table>")
    parts.append(f"<details><summary>Summary numbers (summary.json)</summary><pre>{_numbers(summary)}</pre></details>")
    config = folder / "config.yaml"
    if config.is_file():
        parts.append(f"<details><summary>Settings (config.yaml)</summary><pre>{html.escape(config.read_text())}</pre></details>")
    return "\n".join(parts)


def _verdict_counts(studies: dict[str, dict[str, Any]], summaries: dict[str, Loaded]) -> str:
    """The page's opening table: per study, how many claims got each verdict (or why there are none)."""
    head = "".join(f"<th>{BADGES[v][0]}</th>" for v in Verdict)
    rows = []
    for name, entry in studies.items():
        summary = summaries[name]
        if not isinstance(summary, Summary):
            why = "failed" if summary is None else "re-run"
            cells = f'<td colspan="{len(Verdict)}"><span class="badge bad">{why}</span></td>'
        else:
            cells = "".join(f"<td>{sum(c.verdict is v for c in summary.claims)}</td>" for v in Verdict)
        rows.append(f'<tr><td><a href="#{name}">{html.escape(name)}</a></td>{cells}</tr>')
    loaded = [s for s in summaries.values() if isinstance(s, Summary)]
    split = sum(c.verdict is Verdict.INCONCLUSIVE for s in loaded for c in s.claims)
    seeds = sorted({len(c.per_seed) for s in loaded for c in s.claims if c.per_seed})
    agree = f"{plural(split, 'claim')} inconclusive (the seeds disagree)" if split else "the seeds agree on every claim"
    over = (f'<p class="takeaway">Verdicts over {" or ".join(map(str, seeds))} seeds: {agree}.</p>' if seeds
            else '<p class="muted">Verdicts from one seed each.</p>')
    return over + f'<table class="counts"><tr><th>study</th>{head}</tr>{"".join(rows)}</table>'


def _single_study(out: Path) -> dict[str, Any] | None:
    """The record of a folder written by ``iclab run`` (one study, no reproduce.json), shaped as reproduce's."""
    from iclab.studies import NAMES, study
    from iclab.studies.common import StudyDir

    owner = StudyDir(out).owner()
    if owner is None:
        return None
    if not (out / "summary.json").is_file():
        raise RunDirError(f"{out}: holds the {owner} study, unfinished (no summary.json); run `iclab run {owner} --out {out}` "
                          "to finish it")
    declared = study(owner) if owner in NAMES else None
    record = StudyDir(out).record()
    entry = {"status": "complete", "title": declared.title if declared else owner, "paper": declared.paper if declared else ""}
    return {"preset": record.get("preset", "?"), "versions": {"iclab": record.get("iclab", "?")},
            "studies": {owner: entry}, "single": True}


def build_report(out: Path) -> Path:
    """Write ``out/report.html`` from the results on disk (a folder of ``iclab reproduce``, or of one study written by
    ``iclab run``); returns its path."""
    out = Path(out)
    if not out.is_dir():
        raise RunDirError(f"{out}: {'is a file, not a folder' if out.exists() else 'no such folder'}; give a folder written "
                          "by `iclab reproduce` or `iclab run`")
    record_file = out / "reproduce.json"
    if not record_file.is_file():
        record = _single_study(out)
        if record is None:
            raise RunDirError(f"{out}: neither a reproduction (reproduce.json) nor a study folder (study.json); give a folder "
                              "written by `iclab reproduce` or `iclab run`")
        return _write(out, record, lambda name: out)
    try:
        record = json.loads(record_file.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as err:
        raise RunDirError(f"{record_file}: cannot be read ({type(err).__name__}); re-run `iclab reproduce --out {out}`") from None
    if not isinstance(record, dict) or not isinstance(record.get("studies"), dict):
        raise RunDirError(f"{record_file}: is not a reproduce record (no studies); re-run `iclab reproduce --out {out}`")
    return _write(out, record, lambda name: out / name)


def _job_cost(record: dict[str, Any]) -> str:
    """' · run time 22 min 28 s · peak memory 2.07 GB' from reproduce.json (empty where it has neither)."""
    text = ""
    if isinstance(record.get("wall_time_s"), (int, float)):
        minutes, seconds = divmod(round(record["wall_time_s"]), 60)
        text += f" &middot; run time {minutes} min {seconds} s"
    if isinstance(record.get("peak_memory_gb"), (int, float)):
        text += f" &middot; peak memory {record['peak_memory_gb']} GB (all processes)"
    return text


def _write(out: Path, record: dict[str, Any], folder_of: Callable[[str], Path]) -> Path:
    """The page for ``record`` (reproduce.json's shape); ``folder_of(name)``: where study ``name``'s results lie."""
    studies = record["studies"]
    summaries = {n: _load(e, folder_of(n)) for n, e in studies.items()}  # every one read before anything is written
    toc = " &middot; ".join(f'<a href="#{n}">{html.escape(n)}</a> ({html.escape(e.get("status", "?"))})' for n, e in studies.items())
    versions = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in record.get("versions", {}).items())
    single = record.get("single", False)
    body = [
        f"<h1>iclab: {'study' if single else 'reproduction'} report</h1>",
        f'<p class="muted">preset <b>{html.escape(record.get("preset", "?"))}</b> {_device(record)} '
        f'&middot; written {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}{_job_cost(record)}</p>',
        "" if single else f"<p>{toc}</p>",
        _verdict_counts(studies, summaries),
        *(_study_section(n, e, folder_of(n), summaries[n]) for n, e in studies.items()),
        f"<h2>Software</h2><table>{versions}</table>",
    ]
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>iclab report</title>'
        f"<style>{CSS}</style><script>{IMAGE_CHECK}</script></head><body>" + "\n".join(body) + "</body></html>"
    )
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
