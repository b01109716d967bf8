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
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable

from iclab.claims import Claim, Verdict
from iclab.errors import RunDirError
from iclab.io import atomic_write_text
from iclab.results import encode
from iclab.studies.common import Summary

CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;max-width:1100px;margin:2em auto;padding:0 1em;color:#222}
h1{margin-bottom:.2em} h2{border-bottom:2px solid #ddd;padding-bottom:.2em;margin-top:2em}
table{border-collapse:collapse;width:100%;margin:.5em 0} td,th{border:1px solid #ddd;padding:.35em .5em;vertical-align:top;text-align:left}
.badge{display:inline-block;padding:.1em .5em;border-radius:.6em;font-size:.85em;white-space:nowrap}
.good{background:#d7f5dd;color:#185c2a}.bad{background:#fbdada;color:#7a1616}.info{background:#e3ecfb;color:#1b3f7a}.na{background:#f3ead3;color:#6b5210}
.fig{display:inline-block;margin:.5em;vertical-align:top;text-align:center;font-size:.85em}.fig img{max-width:520px;border:1px solid #eee;cursor:zoom-in}
.fig.full{display:block}.fig.full img{max-width:100%;cursor:zoom-out}
.counts td{text-align:center}.counts td:first-child{text-align:left}
pre{background:#f7f7f7;padding:.6em;overflow:auto;font-size:.8em;max-height:420px} .muted{color:#777}
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
}


def _claim_row(claim: Claim) -> str:
    label, css = BADGES[claim.verdict]
    text = f"{claim.statement} ({claim.measured})." + (f" {claim.scale_note}" if claim.scale_note and claim.verdict is Verdict.NOT_REPRODUCED else "")
    source = f'<br><span class="muted">{html.escape(claim.source)}</span>' if claim.source else ""
    limits = ", ".join(f"{k} = {v}" for k, v in claim.thresholds.items())
    limits = f'<br><span class="muted">thresholds: {html.escape(limits)}</span>' if limits else ""
    return f'<tr><td><span class="badge {css}">{label}</span></td><td>{html.escape(text)}{source}{limits}</td></tr>'


def _figure(path: Path) -> str:
    name = html.escape(path.stem.replace("_", " "))
    if path.suffix == ".html":  # an HTML figure (a fragment the study wrote, e.g. coloured text): embedded as it is
        return f'<div class="fig wide">{path.read_text()}<br>{name}</div>'
    data = base64.b64encode(path.read_bytes()).decode()
    return f'<div class="fig"><img alt="{name}" title="click: full size" src="data:image/png;base64,{data}"><br>{name}</div>'


def _numbers(summary: Summary) -> str:
    return html.escape(json.dumps({"identity": encode(summary.identity), **summary.numbers}, indent=1)[:200_000])


def _study_section(name: str, entry: dict[str, Any], folder: Path) -> str:
    title = html.escape(entry.get("title", name))
    head = f'<h2 id="{name}">{html.escape(name)}: {title}</h2><p class="muted">{html.escape(entry.get("paper", ""))}'
    if "wall_time_s" in entry:
        head += f" &middot; run time {entry['wall_time_s']} s"
    head += "</p>"
    status = entry.get("status")
    if status == "failed":
        return head + f'<p><span class="badge bad">failed</span> {html.escape(entry.get("error", ""))}</p><pre>{html.escape(entry.get("traceback", ""))}</pre>'
    summary_file = folder / "summary.json"
    if not summary_file.is_file():
        return head + '<p><span class="badge bad">no results</span> summary.json is missing.</p>'
    try:
        summary = Summary.load(summary_file)
    except RunDirError as err:
        return head + f'<p><span class="badge bad">re-run</span> {html.escape(str(err))}</p>'
    rows = [_claim_row(c) for c in summary.claims]
    parts = [head, "<h3>The paper's claims and this run</h3>", f"<table><tr><th>verdict</th><th>claim and measurement</th></tr>{''.join(rows)}</table>"]
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


def _summary_of(entry: dict[str, Any], folder: Path) -> Summary | None:
    if entry.get("status") == "failed":
        return None
    try:
        return Summary.load(folder / "summary.json")
    except RunDirError:
        return None


def _verdict_counts(studies: dict[str, dict[str, Any]], folder_of: Callable[[str], Path]) -> str:
    """The page's opening table: per study, how many claims got each verdict (or why there are none)."""
    head = "".join(f"<th>{BADGES[v][0]}</th>" for v in Verdict)
    rows = []
    for name, entry in studies.items():
        summary = _summary_of(entry, folder_of(name))
        if summary is None:
            why = "failed" if entry.get("status") == "failed" else "no readable results"
            cells = f'<td colspan="{len(Verdict)}"><span class="badge bad">{why}</span></td>'
        else:
            cells = "".join(f"<td>{sum(c.verdict is v for c in summary.claims)}</td>" for v in Verdict)
        rows.append(f'<tr><td><a href="#{name}">{html.escape(name)}</a></td>{cells}</tr>')
    return f'<table class="counts"><tr><th>study</th>{head}</tr>{"".join(rows)}</table>'


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
    return {"preset": record.get("preset", "?"), "device": "-", "versions": {"iclab": record.get("iclab", "?")},
            "studies": {owner: entry}, "single": True}


def build_report(out: Path) -> Path:
    """Write ``out/report.html`` from the results on disk (a folder of ``iclab reproduce``, or of one study written by
    ``iclab run``); returns its path."""
    out = Path(out)
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


def _write(out: Path, record: dict[str, Any], folder_of: Callable[[str], Path]) -> Path:
    """The page for ``record`` (reproduce.json's shape); ``folder_of(name)``: where study ``name``'s results lie."""
    studies = record["studies"]
    toc = " &middot; ".join(f'<a href="#{n}">{html.escape(n)}</a> ({html.escape(e.get("status", "?"))})' for n, e in studies.items())
    versions = "".join(f"<tr><td>{html.escape(k)}</td><td>{html.escape(str(v))}</td></tr>" for k, v in record.get("versions", {}).items())
    single = record.get("single", False)
    body = [
        f"<h1>iclab: {'study' if single else 'reproduction'} report</h1>",
        f'<p class="muted">preset <b>{html.escape(record.get("preset", "?"))}</b> &middot; device {html.escape(record.get("device", "?"))} '
        f'&middot; written {datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")}</p>',
        "" if single else f"<p>{toc}</p>",
        _verdict_counts(studies, folder_of),
        *(_study_section(n, e, folder_of(n)) for n, e in studies.items()),
        f"<h2>Software</h2><table>{versions}</table>",
    ]
    page = (
        '<!doctype html><html lang="en"><head><meta charset="utf-8"><title>iclab report</title>'
        f"<style>{CSS}</style><script>{IMAGE_CHECK}</script></head><body>" + "\n".join(body) + "</body></html>"
    )
    path = out / "report.html"
    atomic_write_text(path, page)
    return path
