"""``report.html``: one self-contained page a biologist can open (figures inline, no network, no external files).

Sections: summary, inputs and provenance, alignment, QC, factors, figures, co-localization (a sortable table),
parameters, versions and time per stage. Every number comes from the result container; nothing is recomputed
except simple per-cell counts for QC.
"""

from __future__ import annotations

import base64
import datetime as _dt
import html
import os
import uuid
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger

__all__ = ["SECTIONS", "render_report", "report_folder", "write_report"]

#: (id, heading) of every section, in page order
SECTIONS = (
    ("summary", "Summary"),
    ("inputs", "Inputs and provenance"),
    ("alignment", "Alignment"),
    ("qc", "Quality control"),
    ("factors", "Factors"),
    ("figures", "Figures"),
    ("colocalization", "Co-localization"),
    ("parameters", "Parameters"),
    ("versions", "Versions"),
    ("timings", "Time per stage"),
)

_CSS = """
:root { --fg:#1d2329; --muted:#5b6670; --line:#d8dde2; --bg:#ffffff; --band:#f4f6f8; --accent:#1f5fa8; }
* { box-sizing: border-box; }
body { margin:0; font: 15px/1.5 -apple-system, "Segoe UI", Roboto, "DejaVu Sans", Arial, sans-serif;
       color:var(--fg); background:var(--bg); }
header { padding: 24px 32px 12px; border-bottom: 1px solid var(--line); }
header h1 { margin: 0 0 4px; font-size: 24px; }
header p { margin: 0; color: var(--muted); }
nav { position: sticky; top: 0; background: var(--band); border-bottom: 1px solid var(--line); padding: 6px 32px;
      z-index: 2; }
nav a { color: var(--accent); text-decoration: none; margin-right: 16px; font-size: 14px; white-space: nowrap; }
main { padding: 0 32px 48px; max-width: 1400px; }
section { padding-top: 12px; }
h2 { font-size: 19px; border-bottom: 2px solid var(--line); padding-bottom: 4px; margin-top: 28px; }
h3 { font-size: 16px; margin: 18px 0 6px; }
.cards { display: flex; flex-wrap: wrap; gap: 12px; }
.card { background: var(--band); border: 1px solid var(--line); border-radius: 6px; padding: 10px 16px;
        min-width: 150px; }
.card .v { font-size: 22px; font-weight: 600; }
.card .k { color: var(--muted); font-size: 13px; }
table { border-collapse: collapse; margin: 6px 0 14px; font-size: 13.5px; }
th, td { border: 1px solid var(--line); padding: 4px 8px; text-align: left; vertical-align: top; }
th { background: var(--band); }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
table.sortable th { cursor: pointer; user-select: none; }
table.sortable th::after { content: " \\2195"; color: #9aa4ad; }
table.sortable th[aria-sort="ascending"]::after { content: " \\2191"; color: var(--fg); }
table.sortable th[aria-sort="descending"]::after { content: " \\2193"; color: var(--fg); }
tr.sig td { background: #fff6e5; }
.chip { display: inline-block; width: 11px; height: 11px; border-radius: 2px; margin-right: 6px;
        vertical-align: -1px; border: 1px solid rgba(0,0,0,.2); }
figure { margin: 8px 0 28px; }
figure img { max-width: 100%; height: auto; border: 1px solid var(--line); }
figcaption { color: var(--muted); font-size: 13.5px; max-width: 900px; }
.note { color: var(--muted); font-size: 13.5px; }
.bar { display: inline-block; height: 10px; background: var(--accent); border-radius: 2px; }
.scroll { max-height: 560px; overflow: auto; display: inline-block; max-width: 100%; }
code { background: var(--band); padding: 0 3px; border-radius: 3px; }
label { font-size: 14px; }
"""

# Sortable tables (click a header; numbers sort as numbers, empty / NaN last), a "significant only" filter, and
# "#sort=<column>" / "#sort=-<column>" links that open the co-localization table sorted.
_JS = """
(function () {
  "use strict";
  function key(cell) {
    var raw = cell.getAttribute("data-v");
    var text = raw === null ? cell.textContent.trim() : raw;
    var num = parseFloat(text);
    return { text: text, num: (text === "" || isNaN(num)) ? null : num };
  }
  function sortTable(table, col, dir) {
    var body = table.tBodies[0];
    var rows = Array.prototype.slice.call(body.rows);
    rows.sort(function (a, b) {
      var x = key(a.cells[col]), y = key(b.cells[col]);
      if (x.num === null && y.num === null) { return dir * x.text.localeCompare(y.text); }
      if (x.num === null) { return 1; }
      if (y.num === null) { return -1; }
      return dir * (x.num - y.num);
    });
    rows.forEach(function (r) { body.appendChild(r); });
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      if (i === col) { th.setAttribute("aria-sort", dir > 0 ? "ascending" : "descending"); }
      else { th.removeAttribute("aria-sort"); }
    });
  }
  function columnIndex(table, name) {
    var cells = table.tHead.rows[0].cells;
    for (var i = 0; i < cells.length; i++) {
      if (cells[i].getAttribute("data-col") === name) { return i; }
    }
    return -1;
  }
  Array.prototype.forEach.call(document.querySelectorAll("table.sortable"), function (table) {
    Array.prototype.forEach.call(table.tHead.rows[0].cells, function (th, i) {
      th.addEventListener("click", function () {
        sortTable(table, i, th.getAttribute("aria-sort") === "ascending" ? -1 : 1);
      });
    });
  });
  var filter = document.getElementById("coloc-significant");
  var coloc = document.getElementById("coloc-table");
  if (filter && coloc) {
    filter.addEventListener("change", function () {
      Array.prototype.forEach.call(coloc.tBodies[0].rows, function (r) {
        r.style.display = (filter.checked && !r.classList.contains("sig")) ? "none" : "";
      });
    });
  }
  var m = /sort=(-?)([A-Za-z_]+)/.exec(window.location.hash);
  if (m && coloc) {
    var col = columnIndex(coloc, m[2]);
    if (col >= 0) { sortTable(coloc, col, m[1] === "-" ? -1 : 1); }
  }
  document.body.setAttribute("data-ready", "1");
})();
"""


def _e(value: Any) -> str:
    return html.escape(str(value), quote=True)


def _fmt(value: Any) -> str:
    """A number or value for a table cell: ints as ints, floats to 4 significant digits, lists joined."""
    if isinstance(value, bool | np.bool_):
        return str(bool(value))
    if isinstance(value, int | np.integer):
        return f"{int(value):,}"
    if isinstance(value, float | np.floating):
        v = float(value)
        if not np.isfinite(v):
            return ""
        if v != 0 and (abs(v) < 1e-3 or abs(v) >= 1e6):
            return f"{v:.3g}"
        return f"{v:.4g}"
    if isinstance(value, np.ndarray):
        value = value.tolist()
    if isinstance(value, list | tuple):
        return ", ".join(_fmt(v) for v in value)
    if isinstance(value, Mapping):
        return "; ".join(f"{k}: {_fmt(v)}" for k, v in value.items())
    return str(value)


def _is_num(value: Any) -> bool:
    return isinstance(value, int | float | np.integer | np.floating) and not isinstance(value, bool | np.bool_)


def _table(header: Sequence[str], rows: Iterable[Sequence[Any]], *, attrs: str = "", keys: Sequence[str] = ()) -> str:
    """An HTML table; numeric cells right-aligned and carrying their exact value for sorting."""
    head = "".join(
        f'<th data-col="{_e(keys[i])}">{_e(h)}</th>' if keys else f"<th>{_e(h)}</th>" for i, h in enumerate(header)
    )
    body = []
    for row in rows:
        cls = ""
        if isinstance(row, _Row):
            cls, row = f' class="{row.cls}"' if row.cls else "", row.cells
        cells = []
        for v in row:
            if isinstance(v, _Raw):
                cells.append(f"<td>{v.html}</td>")
            elif _is_num(v):
                exact = float(v)
                data = "" if not np.isfinite(exact) else repr(exact)
                cells.append(f'<td class="num" data-v="{data}">{_e(_fmt(v))}</td>')
            else:
                cells.append(f"<td>{_e(_fmt(v))}</td>")
        body.append(f"<tr{cls}>{''.join(cells)}</tr>")
    return f"<table{attrs}><thead><tr>{head}</tr></thead><tbody>{''.join(body)}</tbody></table>"


class _Raw:
    """Cell content that is already HTML."""

    def __init__(self, text: str) -> None:
        self.html = text


class _Row:
    """A table row with a CSS class."""

    def __init__(self, cells: Sequence[Any], cls: str = "") -> None:
        self.cells, self.cls = cells, cls


def _kv_table(items: Mapping[str, Any]) -> str:
    return _table(("name", "value"), ((k, _flat_value(v)) for k, v in items.items()))


def _flat_value(v: Any) -> Any:
    if isinstance(v, np.generic):
        return v.item()
    if isinstance(v, str) and v == "None":
        return "None"
    return v


def _chip(color: str) -> str:
    return f'<span class="chip" style="background:{_e(color)}"></span>'


# ----------------------------------------------------------------------------------------------------------------
# container access
# ----------------------------------------------------------------------------------------------------------------
def _load(data: Any) -> tuple[Any, Path | None]:
    """(MuData, result folder or None) from a PipelineResult, a container, a result folder or a .h5mu path."""
    if isinstance(data, str | os.PathLike):
        path = Path(data)
        h5 = path
        if path.is_dir():  # `run` writes result.h5mu, `colocalize` result.h5ad
            h5 = next((path / n for n in ("result.h5mu", "result.h5ad") if (path / n).is_file()), path / "result.h5mu")
        if not h5.is_file():
            msg = f"{str(path)!r}: no result.h5mu found; give a result folder written by `spatialmultiomics run`."
            raise InputError(msg)
        from spatialmultiomics._mudata import read_h5mu

        try:
            if h5.suffix == ".h5ad":
                import anndata

                return anndata.read_h5ad(h5), h5.parent
            return read_h5mu(h5), h5.parent
        except (OSError, KeyError, ValueError) as err:
            msg = f"{str(h5)!r}: not a readable .h5mu result file ({type(err).__name__}: {err})."
            raise InputError(msg) from err
    mdata = getattr(data, "mdata", data)
    if not hasattr(mdata, "obs") or not hasattr(mdata, "uns"):
        msg = f"expected a PipelineResult, MuData, AnnData or a result folder, got {type(data).__name__}."
        raise TypeError(msg)
    out = getattr(data, "output_dir", None)
    return mdata, (Path(out) if out is not None else None)


def _modalities(mdata: Any) -> dict[str, Any]:
    mods = getattr(mdata, "mod", None)
    return dict(mods) if mods is not None else {"data": mdata}


def _pipeline_info(mdata: Any, data: Any) -> dict[str, Any]:
    info = dict(mdata.uns.get(Keys.PIPELINE) or {})
    timings = getattr(data, "timings", None)
    if timings:
        info["timings_s"] = dict(timings)
    return info


# ----------------------------------------------------------------------------------------------------------------
# sections
# ----------------------------------------------------------------------------------------------------------------
def _summary(mdata: Any, info: Mapping[str, Any]) -> str:
    params = info.get("params") or {}
    items = [("cells / spots", f"{mdata.n_obs:,}")]
    for name, adata in _modalities(mdata).items():
        items.append((f"{name} features", f"{adata.n_vars:,}"))
    if Keys.NMF in mdata.obsm:
        items.append(("factors", str(np.asarray(mdata.obsm[Keys.NMF]).shape[1])))
    if Keys.CELL_TYPE in mdata.obs:
        types = mdata.obs[Keys.CELL_TYPE].astype(str)
        items.append(("cell types", str(types[types != "Unknown"].nunique())))
        n_unknown = int((types == "Unknown").sum())
        items.append(("Unknown cells", f"{n_unknown:,} ({n_unknown / max(len(types), 1):.2%})"))
    if "radius_um" in params:
        items.append(("neighbourhood radius", f"{_fmt(params['radius_um'])} µm"))
    if Keys.FOV in mdata.obs:
        items.append(("fields of view", str(mdata.obs[Keys.FOV].nunique())))
    demo = mdata.uns.get("demo")
    if isinstance(demo, Mapping) and "accuracy" in demo:
        items.append(("accuracy vs known truth", f"{float(demo['accuracy']):.3f}"))
        items.append(("macro-F1 vs known truth", f"{float(demo['macro_f1']):.3f}"))
    return cards(items)


def _inputs(mdata: Any) -> str:
    rows = []
    for name, adata in _modalities(mdata).items():
        prov = dict(adata.uns.get(Keys.PROVENANCE) or {})
        rows.append(
            (
                name,
                prov.pop("platform", ""),
                prov.pop("reader", ""),
                prov.pop("path", ""),
                prov.pop("pixel_size_um", ""),
                adata.n_obs,
                adata.n_vars,
                _Raw(_e(_fmt({k: _flat_value(v) for k, v in prov.items() if k != "modality"}))),
            )
        )
    table = _table(("modality", "platform", "reader", "file", "µm per unit", "cells", "features", "details"), rows)
    return table + '<p class="note">Coordinates are in micrometres (x, y) after each reader\'s conversion.</p>'


def _alignment(mdata: Any, figures: Mapping[str, tuple[str, str, bytes]]) -> str:
    info = mdata.uns.get("alignment")
    if not isinstance(info, Mapping):
        return '<p class="note">No alignment information stored (a single modality, or modalities joined outside the pipeline).</p>'
    route = str(info.get("route", ""))
    if route == "ids":
        out = (
            "<p>Modalities were joined on their cell ids (the same cells measured twice); no coordinate transform.</p>"
        )
    else:
        out = f"<p>Modalities were aligned by route <code>{_e(route)}</code>.</p>"
    out += _kv_table(dict(info))
    if "alignment" in figures:
        out += _figure_html("alignment", *figures["alignment"])
    return out


def _qc(mdata: Any) -> str:
    import scipy.sparse as sp

    rows = []
    for name, adata in _modalities(mdata).items():
        X = adata.X
        if X is None:
            continue
        if sp.issparse(X):
            X = sp.csr_matrix(X)
            totals = np.asarray(X.sum(axis=1)).ravel()
            detected = np.diff(X.indptr)  # stored entries per cell (explicit zeros are not kept by our readers)
            zero_frac = 1.0 - X.nnz / max(X.shape[0] * X.shape[1], 1)
        else:
            Xd = np.asarray(X)
            totals = Xd.sum(axis=1)
            detected = (Xd > 0).sum(axis=1)
            zero_frac = float((Xd == 0).mean()) if Xd.size else 0.0
        used = int(np.asarray(adata.var[Keys.HVG]).sum()) if Keys.HVG in adata.var else adata.n_vars
        rows.append(
            (
                name,
                adata.n_obs,
                adata.n_vars,
                used,
                float(np.median(totals)) if totals.size else np.nan,
                float(np.median(detected)) if detected.size else np.nan,
                float(zero_frac),
            )
        )
    out = _table(
        (
            "modality",
            "cells",
            "features",
            "features used",
            "median total per cell",
            "median detected per cell",
            "fraction of zeros",
        ),
        rows,
    )
    if Keys.CELL_TYPE in mdata.obs:
        from spatialmultiomics.pl import cell_type_colors

        colors = cell_type_colors(mdata)
        types = mdata.obs[Keys.CELL_TYPE].astype(str)
        conf = (
            pd.Series(np.asarray(mdata.obs[Keys.CELL_TYPE_CONFIDENCE], dtype=np.float64), index=types.index)
            if Keys.CELL_TYPE_CONFIDENCE in mdata.obs
            else None
        )
        nnb = mdata.obs.get(Keys.N_NEIGHBORS)
        trows = []
        for t, color in colors.items():
            mask = (types == t).to_numpy()
            if not mask.any():
                continue
            trows.append(
                (
                    _Raw(_chip(color) + _e(t)),
                    int(mask.sum()),
                    float(mask.mean() * 100),
                    float(conf[mask].median()) if conf is not None else np.nan,
                    float(np.median(np.asarray(nnb)[mask])) if nnb is not None else np.nan,
                )
            )
        out += "<h3>Cells per type</h3>" + _table(
            ("cell type", "cells", "% of cells", "median confidence", "median neighbours"), trows
        )
    return out


def _factor_rows(mdata: Any) -> tuple[list[str], list[list[Any]]]:
    nmf = mdata.uns.get(Keys.NMF_UNS)
    ann = nmf.get("annotation") if isinstance(nmf, Mapping) else None
    if ann is None:
        ann = mdata.uns.get("annotation")
    if not isinstance(ann, Mapping):
        return [], []
    cols = [
        c
        for c in (
            "factor",
            "cell_type",
            "score",
            "n_cells",
            "top_genes",
            "top_proteins",
            "paper_cell_type",
            "paper_score",
        )
        if c in ann
    ]
    cols += [c for c in ann if c not in cols and c != "params" and np.ndim(ann[c]) == 1]
    n = len(np.asarray(ann[cols[0]])) if cols else 0
    cols = [c for c in cols if np.ndim(ann[c]) == 1 and len(ann[c]) == n]
    rows = [[_flat_value(np.asarray(ann[c], dtype=object)[i]) for c in cols] for i in range(n)]
    return cols, rows


def _factors(mdata: Any) -> str:
    cols, rows = _factor_rows(mdata)
    if not cols:
        return '<p class="note">No factor annotation stored.</p>'
    from spatialmultiomics.pl import cell_type_colors
    from spatialmultiomics.pl._utils import colors_for

    palette = cell_type_colors(mdata) if Keys.CELL_TYPE in mdata.obs else {}
    if "cell_type" in cols:
        i = cols.index("cell_type")
        colors = colors_for([str(r[i]) for r in rows], palette)
        for r in rows:
            r[i] = _Raw(_chip(colors[str(r[i])]) + _e(r[i]))
    header = [c.replace("_", " ") for c in cols]
    text = (
        "<p>Each factor of the joint NMF with the cell type its top genes and proteins point to. "
        "<em>score</em>: the evidence for that type; <em>n cells</em>: cells whose dominant factor it is; "
        "<em>paper cell type / score</em>: the seed paper's top-10 genes / top-5 proteins rule, for comparison.</p>"
    )
    return text + _table(header, rows, attrs=' class="sortable"', keys=cols)


def _figure_html(name: str, title: str, caption: str, png: bytes) -> str:
    b64 = base64.b64encode(png).decode("ascii")
    return (
        f'<figure id="fig-{_e(name)}"><h3>{_e(title)}</h3>'
        f'<img alt="{_e(title)}" src="data:image/png;base64,{b64}">'
        f"<figcaption>{_e(caption)}</figcaption></figure>"
    )


def _colocalization(mdata: Any) -> str:
    from spatialmultiomics import spatial

    try:
        table = spatial.colocalization_table(mdata, label_key=Keys.CELL_TYPE)
    except (InputError, KeyError):
        return '<p class="note">No co-localization result stored.</p>'
    info = mdata.uns.get(Keys.nhood(Keys.CELL_TYPE)) or {}
    params = info.get("params") or {}
    cols = [
        "cell_type_a",
        "cell_type_b",
        "observed",
        "expected",
        "jones_scornecchi_score",
        "z_score",
        "p_value",
        "q_value",
    ]
    header = [
        "cell type",
        "neighbour type",
        "observed pairs",
        "expected pairs",
        "score (obs − exp) / exp",
        "z-score",
        "p-value",
        "q-value (BH)",
    ]
    from spatialmultiomics.pl import cell_type_colors
    from spatialmultiomics.pl._utils import colors_for

    palette = colors_for(
        [str(c) for c in info.get("categories", [])], cell_type_colors(mdata) if Keys.CELL_TYPE in mdata.obs else {}
    )
    rows = []
    for rec in table[cols].itertuples(index=False):
        cells = list(rec)
        for i in (0, 1):
            cells[i] = _Raw(_chip(palette.get(str(cells[i]), "#ffffff")) + _e(cells[i]))
        q = float(rec.q_value)
        rows.append(_Row(cells, "sig" if np.isfinite(q) and q < 0.05 else ""))
    n_sig = sum(r.cls == "sig" for r in rows)
    text = (
        "<p>For every ordered pair of cell types: how many neighbour pairs (cell of the first type, neighbour of "
        "the second) were observed, how many are expected if cell types were placed at random on the same cells "
        f"and neighbour graph (expectation <code>{_e(params.get('expected', 'exact'))}</code>), the score "
        "(observed − expected) / expected (the seed's \u201cJones\u2013Scornecchi\u201d score: 0 = random mixing, "
        "&gt; 0 = together more often, &lt; 0 = apart), the exact z-score and its two-sided p-value, and the "
        f"Benjamini\u2013Hochberg q-value. Highlighted: q &lt; 0.05 ({n_sig} of {len(rows)} pairs). "
        "Click a column header to sort.</p>"
        '<p><label><input type="checkbox" id="coloc-significant"> show significant pairs only</label></p>'
    )
    return (
        text
        + '<div class="scroll">'
        + _table(header, rows, attrs=' class="sortable" id="coloc-table"', keys=cols)
        + "</div>"
    )


def _parameters(mdata: Any, info: Mapping[str, Any]) -> str:
    from spatialmultiomics._engine import ENGINE_UNS

    out = ""
    params = info.get("params")
    if isinstance(params, Mapping) and params:
        out += "<h3>Pipeline</h3>" + _kv_table(params)
    steps = [
        ("Engine", mdata.uns.get(ENGINE_UNS)),  # backend, workers, threads, memory limits or the device
        ("Preprocessing", mdata.uns.get("preprocess")),
        ("Factorization", (mdata.uns.get(Keys.NMF_UNS) or {}).get("params")),
        (
            "Annotation",
            ((mdata.uns.get(Keys.NMF_UNS) or {}).get("annotation") or mdata.uns.get("annotation") or {}).get("params"),
        ),
        ("Spatial graph", (mdata.uns.get(Keys.GRAPH_UNS) or {}).get("params")),
        ("Niche composition", (mdata.uns.get(Keys.NICHE_COMPOSITION) or {}).get("params")),
        ("Co-localization", (mdata.uns.get(Keys.nhood(Keys.CELL_TYPE)) or {}).get("params")),
    ]
    for title, p in steps:
        if isinstance(p, Mapping) and p:
            out += f"<h3>{_e(title)}</h3>" + _kv_table(p)
    return out or '<p class="note">No parameters stored.</p>'


def _versions(info: Mapping[str, Any]) -> str:
    import platform
    import sys

    versions = dict(info.get("versions") or {})
    if not versions:
        from spatialmultiomics._inputs import _versions as pipeline_versions

        versions = pipeline_versions()
    versions.setdefault("python", sys.version.split()[0])
    versions.setdefault("platform", platform.platform())
    return _kv_table(versions)


def _timings(info: Mapping[str, Any]) -> str:
    timings = {str(k): float(v) for k, v in (info.get("timings_s") or {}).items()}
    if not timings:
        return '<p class="note">No timings stored (the steps were run one by one).</p>'
    order = ["read", "align", "preprocess", "factorize", "annotate", "spatial", "write"]
    names = [s for s in order if s in timings] + [s for s in timings if s not in order]
    top = max(timings.values()) or 1.0
    rows = [
        (s, timings[s], _Raw(f'<span class="bar" style="width:{max(1, round(300 * timings[s] / top))}px"></span>'))
        for s in names
    ]
    rows.append(("total", sum(timings.values()), _Raw("")))
    return _table(("stage", "seconds", ""), rows)


# ----------------------------------------------------------------------------------------------------------------
# page
# ----------------------------------------------------------------------------------------------------------------
def _collect_figures(mdata: Any, figures_dir: Path | None, figures: bool) -> dict[str, tuple[str, str, bytes]]:
    """``{name: (title, caption, png bytes)}``: read from ``figures_dir`` when there, else drawn in memory."""
    from spatialmultiomics.pl._save import _close, figure_png, figure_specs, iter_figures

    specs = {s.name: s for s in figure_specs()}
    out: dict[str, tuple[str, str, bytes]] = {}
    if figures_dir is not None and figures_dir.is_dir():
        for name, spec in specs.items():
            png = figures_dir / f"{name}.png"
            if png.is_file():
                out[name] = (spec.title, spec.caption, png.read_bytes())
        if out:
            return out
    if not figures:
        return out
    for spec, fig in iter_figures(mdata):
        out[spec.name] = (spec.title, spec.caption, figure_png(fig))
        _close(fig)
    return out


def render_report(
    data: Any, *, figures_dir: str | Path | None = None, figures: bool = True, title: str | None = None
) -> str:
    """Return the HTML text of the report (see :func:`write_report`)."""
    mdata, folder = _load(data)
    info = _pipeline_info(mdata, data)
    if figures_dir is None and folder is not None:
        figures_dir = folder / "figures"
    figs = _collect_figures(mdata, Path(figures_dir) if figures_dir is not None else None, figures)
    version = (info.get("versions") or {}).get("spatialmultiomics") or _package_version()
    now = _dt.datetime.now().astimezone().strftime("%Y-%m-%d %H:%M %Z")
    where = f" — results in {folder}" if folder is not None else ""
    title = title or "spatialmultiomics report"

    fig_html = "".join(_figure_html(n, *v) for n, v in figs.items() if n != "alignment")
    if not fig_html:
        fig_html = '<p class="note">No figures (run with figures enabled to include them).</p>'
    bodies = {
        "summary": _summary(mdata, info),
        "inputs": _inputs(mdata),
        "alignment": _alignment(mdata, figs),
        "qc": _qc(mdata),
        "factors": _factors(mdata),
        "figures": fig_html,
        "colocalization": _colocalization(mdata),
        "parameters": _parameters(mdata, info),
        "versions": _versions(info),
        "timings": _timings(info),
    }
    return page(title, f"spatialmultiomics {version} — generated {now}{where}", SECTIONS, bodies)


def page(title: str, subtitle: str, sections: Sequence[tuple[str, str]], bodies: Mapping[str, str]) -> str:
    """One self-contained HTML page: a header, a navigation bar and ``sections`` ((id, heading) pairs, in order)
    with their HTML ``bodies``; the report's style and its sortable tables."""
    nav = "".join(f'<a href="#{sid}">{_e(head)}</a>' for sid, head in sections)
    main = "".join(f'<section id="{sid}"><h2>{_e(head)}</h2>{bodies[sid]}</section>' for sid, head in sections)
    return (
        "<!DOCTYPE html>\n"
        '<html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        '<link rel="icon" href="data:,">'
        f"<title>{_e(title)}</title><style>{_CSS}</style></head>"
        f"<body><header><h1>{_e(title)}</h1><p>{_e(subtitle)}</p></header>"
        f"<nav>{nav}</nav><main>{main}</main>"
        f"<script>{_JS}</script></body></html>\n"
    )


def cards(items: Iterable[tuple[str, Any]]) -> str:
    """A row of summary cards: a value over its label, for each (label, value)."""
    body = "".join(
        f'<div class="card"><div class="v">{_e(v)}</div><div class="k">{_e(k)}</div></div>' for k, v in items
    )
    return f'<div class="cards">{body}</div>'


def _package_version() -> str:
    from spatialmultiomics import __version__

    return __version__


def write_report(
    data: Any,
    path: str | Path,
    *,
    figures_dir: str | Path | None = None,
    figures: bool = True,
    title: str | None = None,
) -> Path:
    """Write ``report.html``: one self-contained page with every result of a run, readable in any browser.

    The page holds the inputs and their provenance, the alignment, QC (cells, features, per-modality counts,
    cells per type), the factor table, every figure (inline PNG), a sortable co-localization table, the
    parameters of each step, package versions and the time per stage. It loads nothing from the network and
    needs no other file.

    Parameters
    ----------
    data
        A :class:`~spatialmultiomics.PipelineResult`, a MuData with results, or a result folder / ``result.h5mu``
        written by the pipeline.
    path
        The HTML file to write (its folder is created); written atomically.
    figures_dir
        Folder with the PNG figures of :func:`smo.pl.save_figures` to embed; default ``<result folder>/figures``.
        Figures not found there are drawn in memory.
    figures
        Include figures (drawn when not found in ``figures_dir``).
    title
        Page title; default "spatialmultiomics report".

    Returns
    -------
    The path written.
    """
    out = write_html(render_report(data, figures_dir=figures_dir, figures=figures, title=title), path, "report.html")
    logger.info("report written to %s", out)
    return out


def write_html(text: str, path: str | Path, example: str) -> Path:
    """Write ``text`` to the file ``path`` atomically (its folder created); a folder as ``path`` is refused with
    ``<path>/<example>`` as the example of a file name."""
    out = Path(path)
    if out.is_dir():
        msg = f"path={str(out)!r} is a folder; give the report's file name, e.g. {str(out / example)!r}."
        raise InputError(msg)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.{os.getpid()}-{uuid.uuid4().hex[:8]}.tmp")  # usual permissions, unlike mkstemp
    try:
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(out)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return out


def report_folder(
    result_dir: str | Path, *, output: str | Path | None = None, figures: bool = True, title: str | None = None
) -> Path:
    """(Re)write ``figures/`` and ``report.html`` of a result folder written earlier by the pipeline.

    Parameters
    ----------
    result_dir
        Folder holding ``result.h5mu`` (or the ``.h5mu`` file itself).
    output
        Report file; default ``<result_dir>/report.html``.
    figures
        Redraw ``<result_dir>/figures/`` (replaced as a whole, atomically) and embed the figures.
    title
        Page title.

    Returns
    -------
    The report's path.
    """
    import shutil

    path = Path(result_dir)
    if not path.exists():
        msg = f"RESULT_DIR {str(path)!r} does not exist; give a folder written by `spatialmultiomics run`."
        raise InputError(msg)
    mdata, folder = _load(path)
    folder = folder if folder is not None else path
    out = Path(output) if output is not None else folder / "report.html"
    figures_dir = folder / "figures"
    if figures:
        from spatialmultiomics.pl import save_figures

        tmp = folder / f".figures.tmp-{os.getpid()}-{uuid.uuid4().hex[:8]}"
        try:
            save_figures(mdata, tmp)
            old = folder / f".figures.old-{os.getpid()}-{uuid.uuid4().hex[:8]}"
            if figures_dir.exists():
                figures_dir.rename(old)
            tmp.rename(figures_dir)
            shutil.rmtree(old, ignore_errors=True)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return write_report(mdata, out, figures_dir=figures_dir, figures=figures, title=title)
