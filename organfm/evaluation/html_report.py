"""``report.html``: one self-contained file that opens offline (no CDN, no external file).

It holds the results tables, the PNG plots inlined as base64, and an interactive embedding scatter
(inline SVG drawn by a few lines of plain JavaScript): hovering a point shows the image's thumbnail
(base64 PNG) and its public metadata (class, organ, split, non-identifying manifest columns; never a
patient id or a file path). Opening the file with ``#selftest`` makes the page hover its first point
itself and record the outcome in ``<body data-selftest=...>``, so a headless browser can check the
interaction without a driver.
"""
from __future__ import annotations

import base64
import html
import io
import json
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from organfm.evaluation.cells import format_cell, headline, health_cell

__all__ = ["render_html", "thumbnails"]

_CSS = """
body{font:14px/1.45 system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:24px auto;max-width:1200px;
color:#222;padding:0 16px}
h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd;padding-bottom:4px}
table{border-collapse:collapse;margin:8px 0 16px;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:right}
th:first-child,td:first-child,th:nth-child(2),td:nth-child(2){text-align:left}th{background:#f3f3f3}
.note{background:#fff6df;border-left:4px solid #e0a800;padding:6px 10px;margin:8px 0}
.plots img{max-width:100%;border:1px solid #eee;margin:4px}.mono{font-family:ui-monospace,monospace;font-size:12px}
#scatter{border:1px solid #ccc;background:#fff}
#tooltip{position:fixed;display:none;background:#fff;border:1px solid #888;padding:6px;
box-shadow:0 2px 8px rgba(0,0,0,.25);pointer-events:none;font-size:12px;z-index:10}
#tooltip img{image-rendering:pixelated;width:96px;height:96px;display:block;margin-bottom:4px}
#tooltip table{margin:0}#tooltip td{border:none;padding:0 6px 0 0;text-align:left}
#legend span{display:inline-block;margin-right:12px}
#legend i{display:inline-block;width:10px;height:10px;margin-right:4px;border-radius:5px}
"""

_JS = """
(function () {
  'use strict';
  var data = JSON.parse(document.getElementById('scatter-data').textContent);
  var svg = document.getElementById('scatter'), tip = document.getElementById('tooltip');
  var modelSel = document.getElementById('scatter-model'), colorSel = document.getElementById('scatter-color');
  var legend = document.getElementById('legend'), NS = 'http://www.w3.org/2000/svg';
  var palette = ['#1f77b4','#ff7f0e','#2ca02c','#d62728','#9467bd','#8c564b','#e377c2','#7f7f7f','#bcbd22',
                 '#17becf','#aec7e8','#ffbb78','#98df8a','#ff9896','#c5b0d5','#c49c94','#f7b6d2','#dbdb8d'];
  function categories(column) {
    var seen = {};
    data.meta.forEach(function (m) { seen[String(m[column])] = true; });
    return Object.keys(seen).sort();
  }
  function draw() {
    while (svg.firstChild) { svg.removeChild(svg.firstChild); }
    var coords = data.models[modelSel.value] || [], column = colorSel.value, cats = categories(column);
    if (!coords.length) { return; }
    var xs = coords.map(function (p) { return p[0]; }), ys = coords.map(function (p) { return p[1]; });
    var x0 = Math.min.apply(null, xs), x1 = Math.max.apply(null, xs);
    var y0 = Math.min.apply(null, ys), y1 = Math.max.apply(null, ys);
    var w = 640, h = 480, pad = 12;
    coords.forEach(function (p, i) {
      var c = document.createElementNS(NS, 'circle');
      c.setAttribute('cx', (pad + (p[0] - x0) / ((x1 - x0) || 1) * (w - 2 * pad)).toFixed(1));
      c.setAttribute('cy', (h - pad - (p[1] - y0) / ((y1 - y0) || 1) * (h - 2 * pad)).toFixed(1));
      c.setAttribute('r', '4');
      c.setAttribute('fill', palette[cats.indexOf(String(data.meta[i][column])) % palette.length]);
      c.setAttribute('fill-opacity', '0.8');
      c.setAttribute('data-i', String(i));
      svg.appendChild(c);
    });
    legend.textContent = '';
    cats.forEach(function (cat, j) {
      var s = document.createElement('span'), dot = document.createElement('i');
      dot.style.background = palette[j % palette.length];
      s.appendChild(dot);
      s.appendChild(document.createTextNode(cat));
      legend.appendChild(s);
    });
  }
  function show(i, x, y) {
    tip.textContent = '';
    var img = document.createElement('img');
    img.src = 'data:image/png;base64,' + data.thumbs[i];
    img.alt = 'thumbnail';
    tip.appendChild(img);
    var table = document.createElement('table');
    Object.keys(data.meta[i]).forEach(function (key) {
      var tr = document.createElement('tr'), k = document.createElement('td'), v = document.createElement('td');
      k.textContent = key;
      v.textContent = String(data.meta[i][key]);
      tr.appendChild(k);
      tr.appendChild(v);
      table.appendChild(tr);
    });
    tip.appendChild(table);
    tip.style.left = (x + 14) + 'px';
    tip.style.top = (y + 14) + 'px';
    tip.style.display = 'block';
  }
  svg.addEventListener('mouseover', function (e) {
    if (e.target.tagName === 'circle') { show(+e.target.getAttribute('data-i'), e.clientX, e.clientY); }
  });
  svg.addEventListener('mouseout', function (e) {
    if (e.target.tagName === 'circle') { tip.style.display = 'none'; }
  });
  modelSel.addEventListener('change', draw);
  colorSel.addEventListener('change', draw);
  draw();
  document.body.setAttribute('data-scatter-points', String(svg.querySelectorAll('circle').length));
  if (location.hash === '#selftest') {
    var first = svg.querySelector('circle');
    if (first) { first.dispatchEvent(new MouseEvent('mouseover', {bubbles: true, clientX: 20, clientY: 20})); }
    var ok = tip.style.display === 'block' && tip.querySelector('img') !== null;
    document.body.setAttribute('data-selftest', ok ? 'ok' : 'fail');
  }
})();
"""


def thumbnails(images: torch.Tensor, size: int = 48) -> list[str]:
    """Base64 PNG thumbnails.

    Args:
        images: (N, 1, H, W) float in [0, 1].
        size: longest side of a thumbnail (images are never upscaled).

    Returns:
        N base64 strings (no ``data:`` prefix).
    """
    from PIL import Image

    out = []
    for image in images:
        array = (image[0].clamp(0, 1).numpy() * 255).round().astype(np.uint8)
        pil = Image.fromarray(array, mode="L")
        if max(pil.size) > size:
            pil.thumbnail((size, size), Image.Resampling.LANCZOS)
        buf = io.BytesIO()
        pil.save(buf, format="PNG", optimize=True)
        out.append(base64.b64encode(buf.getvalue()).decode("ascii"))
    return out


def render_html(results: dict[str, Any], plots: Mapping[str, Path], scatter: Mapping[str, Any]) -> str:
    """The whole report page as one string.

    Args:
        results: the results dict (rows, models, data, notes, timing, task).
        plots: plot name -> PNG path (inlined as base64).
        scatter: ``{"split": SplitData, "index": (P,) indices, "meta": [P dicts], "models": {model: [[x, y]]}}``;
            empty for no scatter.

    Returns:
        HTML text.
    """
    task = results.get("task", {})
    esc = html.escape
    parts = ["<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>",
             f"<title>organfm evaluation: {esc(str(task.get('name', '')))}</title>",
             "<script>window.addEventListener('error',function(e){document.documentElement.setAttribute("
             "'data-js-error',String(e.message));});</script>",
             f"<style>{_CSS}</style></head><body>",
             f"<h1>organfm evaluation: {esc(str(task.get('name', '')))}</h1>"]
    for note in results.get("notes", []):
        parts.append(f"<div class='note'>{esc(str(note))}</div>")
    parts.append(_models_table(results))
    data = results.get("data", {})
    if data:
        sizes = ", ".join(f"{esc(n)} {s['n']}" for n, s in data.get("splits", {}).items())
        parts.append(f"<p>Data <span class='mono'>{esc(str(data.get('source')))}</span>: {sizes}; classes: "
                     f"{esc(', '.join(data.get('classes', [])))}.</p>")
    lines = [f"<li>{esc(r['model'])} {esc(r['protocol'])} ({esc(r['setting'])}): {esc(text)}</li>"
             for r in results.get("rows", []) if (text := headline(r))]
    if lines:
        parts.append("<h2>Headline</h2><ul id='headline'>" + "".join(lines) + "</ul>")
    parts.append("<h2>Results</h2>")
    parts.append(_results_tables(results.get("rows", [])))
    if scatter.get("models"):
        parts.append(_scatter_section(scatter, task.get("report", {}).get("thumbnail_size", 48)))
    if plots:
        parts.append("<h2>Plots</h2><div class='plots'>")
        for name, path in plots.items():
            encoded = base64.b64encode(Path(path).read_bytes()).decode("ascii")
            parts.append(f"<img alt='{esc(name)}' title='{esc(name)}' src='data:image/png;base64,{encoded}'>")
        parts.append("</div>")
    timing = results.get("timing", {})
    if timing:
        parts.append("<h2>Timing (s)</h2><p class='mono'>"
                     + esc(", ".join(f"{k} {v}" for k, v in timing.items())) + "</p>")
    env = results.get("environment", {})
    parts.append(f"<p class='mono'>{esc(json.dumps(env))}</p></body></html>")
    return "\n".join(parts)


def _models_table(results: dict[str, Any]) -> str:
    esc = html.escape
    rows = "".join(f"<tr><td>{esc(n)}</td><td class='mono'>{esc(str(m.get('spec')))}</td>"
                   f"<td>{esc(str(m.get('architecture')))}</td>"
                   f"<td class='mono'>{esc(str(m.get('model_hash'))[:12])}</td>"
                   f"<td title='{esc(str((m.get('health') or {}).get('reason') or ''))}'>"
                   f"{esc(health_cell(m))}</td></tr>"
                   for n, m in results.get("models", {}).items())
    return (f"<table id='models'><tr><th>model</th><th>spec</th><th>architecture</th><th>hash</th>"
            f"<th>training health</th></tr>{rows}</table>")



def _results_tables(rows: list[dict[str, Any]]) -> str:
    esc = html.escape
    grouped: dict[str, list[dict[str, Any]]] = {}
    for row in rows:
        grouped.setdefault(row["protocol"], []).append(row)
    out = []
    for protocol, group in grouped.items():
        metrics: list[str] = []
        for row in group:
            metrics += [m for m in row["metrics"] if m not in metrics]
        head = "".join(f"<th>{esc(m)}</th>" for m in metrics)
        body = ""
        for row in group:
            n = max(int(s.get("n", 1)) for s in row["metrics"].values())
            cells = "".join(f"<td>{esc(format_cell(row['metrics'][m]) if m in row['metrics'] else '')}</td>"
                            for m in metrics)
            body += f"<tr><td>{esc(row['model'])}</td><td>{esc(row['setting'])}</td>{cells}<td>{n}</td></tr>"
        out.append(f"<h3>{esc(protocol)}</h3><table class='results' data-protocol='{esc(protocol)}'>"
                   f"<tr><th>model</th><th>setting</th>{head}<th>n</th></tr>{body}</table>")
    return "\n".join(out)


def _scatter_section(scatter: Mapping[str, Any], thumb_size: int) -> str:
    esc = html.escape
    split, index = scatter["split"], scatter["index"]
    payload = {"models": scatter["models"], "meta": scatter["meta"],
               "thumbs": thumbnails(split.images[torch.as_tensor(index, dtype=torch.long)], thumb_size)}
    blob = json.dumps(payload).replace("</", "<\\/")  # never close the script element early
    columns = list(dict.fromkeys(k for m in scatter["meta"] for k in m))
    model_opts = "".join(f"<option>{esc(m)}</option>" for m in scatter["models"])
    color_opts = "".join(f"<option>{esc(c)}</option>" for c in columns)
    return (f"<h2>Embedding (t-SNE of {len(index)} {esc(split.name)} images; hover a point)</h2>"
            f"<p>model <select id='scatter-model'>{model_opts}</select> colour by "
            f"<select id='scatter-color'>{color_opts}</select></p>"
            "<svg id='scatter' width='640' height='480' viewBox='0 0 640 480' role='img'></svg>"
            "<div id='legend'></div><div id='tooltip'></div>"
            f"<script type='application/json' id='scatter-data'>{blob}</script><script>{_JS}</script>")
