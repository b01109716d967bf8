"""Live views: self-contained HTML fragments (data and script inlined, no network) that the report embeds and that
``iclab view`` writes as a page of their own.

- :func:`attention_view`: a prompt's tokens; pick a layer and head (or click a cell of the head grid) and hover a
  token to see where it attends; or colour the tokens by a per-token value (loss). Its state can be set from the
  page address (``#L1H0t7``: layer 1, head 0, hovering token 7), so a view of one head can be shared as a link.
- :func:`patching_view`: a patching result's sites x positions grid with each cell's numbers on hover; clicking a
  row colours the prompt's tokens by that site's effect.

Printed, a view shows its current state (controls hidden): by default the attention from the last token of the
head the grid ranks first, or the first row of a patching grid.
"""

from __future__ import annotations

import base64
import html
import json
import uuid
from pathlib import Path

import numpy as np

STYLE = """
.iv{font-family:system-ui,sans-serif;font-size:13px;text-align:left;border:1px solid #ddd;padding:.6em;margin:.4em 0;max-width:1060px}
.iv .tok{display:inline-block;padding:1px 3px;margin:1px;border:1px solid #eee;border-radius:3px;font-family:monospace;
  white-space:pre;cursor:default}
.iv .tok.q{outline:2px solid #222}
.iv .grid{border-collapse:collapse;margin:.4em 0;width:auto}.iv .grid td{width:16px;height:16px;padding:0;border:1px solid #fff;cursor:pointer}
.iv .grid th{font-weight:normal;font-size:10px;padding:0 3px;border:none;color:#666}
.iv .grid td.sel{outline:2px solid #222}.iv .grid tr.sel th{font-weight:bold;color:#000;background:#ffe9a8}
.iv .info{color:#444;min-height:1.3em;margin:.3em 0}.iv label{margin-right:1em}
@media print{.iv select,.iv .hint{display:none}.iv{border:none}}
"""

SCRIPT = r"""
if (!window.iclabViews) { window.iclabViews = (function () {
  function b64(s) { var b = atob(s), a = new Uint8Array(b.length); for (var i = 0; i < b.length; i++) a[i] = b.charCodeAt(i); return a; }
  function heat(x) {  // x in [-1, 1]: red (negative) .. white .. blue (positive), as the PNG heatmaps (RdBu)
    var a = Math.min(1, Math.abs(x)), c = x >= 0 ? [31, 119, 180] : [214, 39, 40];
    return 'rgb(' + c.map(function (v) { return Math.round(255 - a * (255 - v)); }).join(',') + ')';
  }
  function attn(x) { var a = Math.max(0, Math.min(1, x)); return 'rgba(255,127,14,' + a.toFixed(3) + ')'; }
  function fmt(v) { return (v >= 0 ? '+' : '') + v.toFixed(3); }
  function esc(s) { return s.replace(/[&<>"]/g, function (c) { return {'&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;'}[c]; }); }
  function tokens(root, toks) {
    var box = root.querySelector('.toks');
    box.innerHTML = toks.map(function (t, i) { return '<span class="tok" data-i="' + i + '" title="' + i + ': ' + esc(JSON.stringify(t)) + '">' + esc(t) + '</span>'; }).join('');
    return box.querySelectorAll('.tok');
  }
  function grid(root, rows, cols, value, title, onpick) {
    var t = root.querySelector('table.grid'), h = '<tr><th></th>' + cols.map(function (c) { return '<th>' + esc(c) + '</th>'; }).join('') + '</tr>';
    rows.forEach(function (r, i) {
      h += '<tr><th>' + esc(r) + '</th>' + cols.map(function (c, j) { return '<td data-r="' + i + '" data-c="' + j + '" title="' + esc(title(i, j)) + '" style="background:' + heat(value(i, j)) + '"></td>'; }).join('') + '</tr>';
    });
    t.innerHTML = h;
    t.querySelectorAll('td').forEach(function (td) { td.addEventListener('click', function () { onpick(+td.dataset.r, +td.dataset.c); }); });
    return t;
  }
  function select(t, r, c) {  // one cell (c >= 0) or, for c < 0, a whole row by its label
    t.querySelectorAll('td').forEach(function (td) { td.classList.toggle('sel', c >= 0 && +td.dataset.r === r && +td.dataset.c === c); });
    t.querySelectorAll('tr').forEach(function (tr, i) { tr.classList.toggle('sel', c < 0 && i === r + 1); });
  }

  function attention(id, d) {
    var root = document.getElementById(id), P = b64(d.patterns), L = d.L, H = d.H, T = d.tokens.length;
    var ls = root.querySelector('.layer'), hs = root.querySelector('.head'), cs = root.querySelector('.colour');
    var spans = tokens(root, d.tokens), info = root.querySelector('.info'), state = {l: d.start[0], h: d.start[1], q: T - 1};
    for (var l = 0; l < L; l++) ls.add(new Option('layer ' + l, l));
    for (var h = 0; h < H; h++) hs.add(new Option('head ' + h, h));
    Object.keys(d.values).forEach(function (k) { cs.add(new Option(k, k)); });
    var names = Object.keys(d.grids), g = d.grids[names[0]], gmax = Math.max(1, Math.max.apply(null, g.flat().map(Math.abs)));  // scores in [0, 1] keep their scale
    var table = grid(root, g.map(function (_, l) { return 'L' + l; }), g[0].map(function (_, h) { return 'H' + h; }),
      function (l, h) { return g[l][h] / gmax; },
      function (l, h) { return 'L' + l + 'H' + h + ': ' + names.map(function (n) { return n + ' ' + d.grids[n][l][h].toFixed(3); }).join(', '); },
      function (l, h) { state.l = l; state.h = h; draw(); });
    function w(l, h, q, k) { return P[((l * H + h) * T + q) * T + k] / 255; }
    function draw() {
      ls.value = state.l; hs.value = state.h; select(table, state.l, state.h);
      if (cs.value !== 'attention') {
        var v = d.values[cs.value], m = Math.max.apply(null, v.map(Math.abs)) || 1;
        spans.forEach(function (s, i) { s.classList.remove('q'); s.style.background = heat(v[i] / m); s.title = i + ': ' + cs.value + ' ' + v[i].toFixed(3); });
        info.textContent = 'tokens coloured by ' + cs.value + ' (blue: high)';
        root.dataset.state = cs.value;
        return;
      }
      var best = 0;
      spans.forEach(function (s, k) {
        var a = k <= state.q ? w(state.l, state.h, state.q, k) : 0;
        s.style.background = attn(a); s.classList.toggle('q', k === state.q); s.title = k + ': attention ' + a.toFixed(3);
        if (a > w(state.l, state.h, state.q, best)) best = k;
      });
      info.textContent = 'L' + state.l + 'H' + state.h + ': token ' + state.q + ' ' + JSON.stringify(d.tokens[state.q]) +
        ' attends most to token ' + best + ' ' + JSON.stringify(d.tokens[best]) + ' (' + w(state.l, state.h, state.q, best).toFixed(2) + ')';
      root.dataset.state = 'L' + state.l + 'H' + state.h + 't' + state.q;
    }
    spans.forEach(function (s, i) { s.addEventListener('mouseover', function () { state.q = i; draw(); }); });
    ls.addEventListener('change', function () { state.l = +ls.value; draw(); });
    hs.addEventListener('change', function () { state.h = +hs.value; draw(); });
    cs.addEventListener('change', draw);
    var m = /^#L(\d+)H(\d+)(?:t(\d+))?$/.exec(location.hash);
    if (m && +m[1] < L && +m[2] < H) { state.l = +m[1]; state.h = +m[2]; }
    draw();
    if (m && m[3] !== undefined && +m[3] < T) spans[+m[3]].dispatchEvent(new MouseEvent('mouseover', {bubbles: true}));
  }

  function patching(id, d) {
    var root = document.getElementById(id), spans = tokens(root, d.tokens), info = root.querySelector('.info');
    var m = Math.max.apply(null, d.values.flat().map(function (x) { return isFinite(x) ? Math.abs(x) : 0; })) || 1;
    var each = d.values[0].length === d.tokens.length;  // else one column: every position patched at once
    var cols = each ? d.tokens.map(function (_, t) { return '' + t; }) : ['all positions'];
    var table = grid(root, d.rows, cols, function (r, t) { return d.values[r][t] / m; },
      function (r, t) { return d.rows[r] + (each ? ' at ' + t + ' ' + JSON.stringify(d.tokens[t]) : ' at every position') + ': ' + d.what + ' ' + fmt(d.values[r][t]) +
        ' (change ' + fmt(d.effect[r][t]) + ' \u00b1 ' + d.stderr[r][t].toFixed(3) + ')'; }, pick);
    function pick(r) {
      select(table, r, -1);
      if (!each) { info.textContent = d.rows[r] + ' patched at every position: ' + d.what + ' ' + fmt(d.values[r][0]); root.dataset.state = d.rows[r]; return; }
      spans.forEach(function (s, t) { var v = d.values[r][t]; s.style.background = heat(v / m); s.title = t + ': ' + d.what + ' ' + fmt(v); });
      info.textContent = 'tokens coloured by the effect of patching ' + d.rows[r] + ' at each position';
      root.dataset.state = d.rows[r];
    }
    pick(d.start);
  }
  return {attention: attention, patching: patching};
})(); }
"""


def _fragment(kind: str, body: str, data: dict) -> str:
    vid = f"iv-{kind}-{uuid.uuid4().hex[:12]}"  # unique across the studies whose views one report embeds
    payload = json.dumps(data, separators=(",", ":")).replace("</", "<\\/")
    return (f'<style>{STYLE}</style><div class="iv" id="{vid}">{body}</div>'
            f"<script>{SCRIPT}</script><script>window.iclabViews.{kind}('{vid}', {payload});</script>")


def _rounded(a: np.ndarray, digits: int = 4) -> list:
    return np.round(np.nan_to_num(np.asarray(a, dtype=float), nan=0.0), digits).tolist()


def attention_view(tokens: list[str], patterns: np.ndarray, title: str, grids: dict[str, np.ndarray],
                   values: dict[str, np.ndarray] | None = None) -> str:
    """tokens [T]; patterns [L, H, T, T] (query, key; stored as bytes: 1/255 resolution); grids: name -> [L, H] per-head
    numbers (the first colours the grid and picks the head shown first); values: name -> [T] per-token numbers."""
    P = np.asarray(patterns, dtype=float)
    L, H, T, _ = P.shape
    if T != len(tokens):
        raise ValueError(f"patterns cover {T} positions, tokens {len(tokens)}")
    first = np.asarray(next(iter(grids.values())))
    start = [int(i) for i in np.unravel_index(int(np.nanargmax(first)), first.shape)]
    data = {"tokens": tokens, "L": L, "H": H, "start": start,
            "patterns": base64.b64encode(np.clip(np.rint(P * 255), 0, 255).astype(np.uint8).tobytes()).decode(),
            "grids": {k: _rounded(v) for k, v in grids.items()}, "values": {k: _rounded(v) for k, v in (values or {}).items()}}
    body = (f"<b>{html.escape(title)}</b><br><label><select class='layer'></select></label><label><select class='head'>"
            "</select></label><label>colour: <select class='colour'><option value='attention'>attention from the hovered "
            f"token</option></select></label><span class='hint muted'>hover a token; click a head in the grid "
            f"({html.escape(' / '.join(grids))}, numbers on hover)</span><div class='toks'></div><div class='info'></div>"
            "<table class='grid'></table>")
    return _fragment("attention", body, data)


def patching_view(p, title: str | None = None, top: int | None = None) -> str:
    """A :class:`~iclab.analysis.patching.Patching`'s sites x positions, normalised where the metric moved; ``top``: only
    the rows (sites) with the largest effect somewhere, in their model order (a real model has hundreds of heads)."""
    from iclab.analysis.patching import HEAD_SITES

    normalised = np.isfinite(p.normalised).all()
    values, what = (p.normalised, "normalised effect") if normalised else (p.effect, f"change of {p.metric}")
    if p.site in HEAD_SITES:
        L, H = values.shape[:2]
        rows = [f"L{layer}H{h}" for layer in range(L) for h in range(H)]
        values, effect, stderr = (np.asarray(a).reshape(L * H, -1) for a in (values, p.effect, p.stderr))
    else:
        rows = [("final" if p.site == "resid" and i == values.shape[0] - 1 else f"L{i}") for i in range(values.shape[0])]
        values, effect, stderr = (np.asarray(a).reshape(values.shape[0], -1) for a in (values, p.effect, p.stderr))
    strength = np.abs(np.nan_to_num(values)).max(axis=1)
    if top is not None and top < len(rows):
        keep = np.sort(np.argsort(-strength)[:top])
        rows, values, effect, stderr, strength = ([rows[i] for i in keep], values[keep], effect[keep], stderr[keep], strength[keep])
    start = int(np.argmax(strength))
    data = {"tokens": p.tokens, "rows": rows, "values": _rounded(values), "effect": _rounded(effect),
            "stderr": _rounded(stderr), "what": what, "start": start}
    heading = title or (f"{p.method} {p.direction} patching of {p.site} on {p.metric}: clean {p.clean_metric:.2f}, "
                        f"corrupted {p.corrupted_metric:.2f}")
    body = (f"<b>{html.escape(heading)}</b><br><span class='hint muted'>click a row to colour the prompt by its effect; "
            "numbers on hover</span><div class='toks'></div><div class='info'></div><table class='grid'></table>")
    return _fragment("patching", body, data)


def save_view(fragment: str, folder: Path, name: str) -> Path:
    """Write a view fragment as ``folder/name.html`` (a figure the report embeds as it is)."""
    from iclab.io import atomic_write_text

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / f"{name}.html"
    atomic_write_text(path, fragment)
    return path


def page(title: str, fragments: list[str]) -> str:
    """A stand-alone page around view fragments."""
    return (f"<!doctype html><html><head><meta charset='utf-8'><title>{html.escape(title)}</title>"
            "<style>body{font-family:system-ui,sans-serif;max-width:1100px;margin:1.5em auto;padding:0 1em}"
            ".muted{color:#777}</style></head><body>"
            f"<h2>{html.escape(title)}</h2>" + "\n".join(fragments) + "</body></html>")
