"""Shared helpers of the plotting functions: find stored results, one colour per cell type, new figures.

Plot functions read results that the analysis stored in the container and never recompute them. When no ``ax`` is
given they draw through :mod:`matplotlib.pyplot` (so figures show in notebooks), except inside
:func:`offscreen`, where they build bare :class:`~matplotlib.figure.Figure` objects on the Agg canvas (no GUI
backend, no global pyplot state): that is how :func:`~spatialmultiomics.pl.save_figures` draws.
"""

from __future__ import annotations

import contextlib
import contextvars
from collections.abc import Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialmultiomics._keys import Keys

if TYPE_CHECKING:
    from anndata import AnnData
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from mudata import MuData

__all__ = [
    "UNKNOWN_COLOR",
    "cell_type_colors",
    "get_container",
    "offscreen",
]

UNKNOWN_COLOR = "#c7c7c7"  # 'Unknown' cells, isolated cells, missing values
#: label values drawn in :data:`UNKNOWN_COLOR` instead of taking a palette colour
_GREY_LABELS = frozenset({"unknown", "isolated", "none", "nan", ""})
#: drawn points per panel before a seeded subsample is shown instead (the figure says so)
MAX_POINTS = 300_000
#: above this many points per panel, markers are drawn without antialiasing (PNGs compress 3x better, and
#: dots this small look the same)
AA_POINTS = 3000

_OFFSCREEN: contextvars.ContextVar[bool] = contextvars.ContextVar("smo_pl_offscreen", default=False)


def _palette(n: int) -> list[str]:
    """``n`` distinct colours: tab10's strong colours, then their light partners, then tab20b / tab20c, then HSV."""
    from matplotlib import colormaps
    from matplotlib.colors import to_hex

    tab20 = [to_hex(c) for c in colormaps["tab20"].colors]
    base = tab20[0::2] + tab20[1::2]
    base = [c for c in base if c not in ("#7f7f7f", "#c7c7c7")]  # greys are reserved for Unknown
    base += [to_hex(c) for c in colormaps["tab20b"].colors] + [to_hex(c) for c in colormaps["tab20c"].colors]
    if n > len(base):
        hsv = colormaps["hsv"]
        base += [to_hex(hsv(i / (n - len(base)))) for i in range(n - len(base))]
    return base[:n]


def get_container(data: Any) -> MuData | AnnData:
    """Return the MuData / AnnData behind ``data`` (a container or a :class:`~spatialmultiomics.PipelineResult`)."""
    mdata = getattr(data, "mdata", data)
    if not hasattr(mdata, "obs") or not hasattr(mdata, "uns"):
        msg = f"expected a MuData, AnnData or PipelineResult, got {type(data).__name__}."
        raise TypeError(msg)
    return mdata


def require(condition: bool, what: str, how: str) -> None:
    """Raise KeyError ``"No {what} in the data. Run {how} first."`` unless ``condition``."""
    if not condition:
        msg = f"No {what} in the data. Run {how} first."
        raise KeyError(msg)


def cell_type_colors(data: Any, *, label_key: str = Keys.CELL_TYPE) -> dict[str, str]:
    """Return ``{label: hex colour}`` for the categories of ``obs[label_key]``, the same in every figure.

    The palette lives in ``uns['{label_key}_colors']`` (scanpy's convention: a list aligned with the categories).
    A stored palette of the right length is used as it is (so a user can set their own); otherwise one is made
    and stored. ``'Unknown'`` is grey.

    Parameters
    ----------
    data
        MuData, AnnData or PipelineResult with a categorical ``obs[label_key]``.
    label_key
        Column of ``obs`` holding the labels.

    Returns
    -------
    dict mapping each category name to a hex colour string.
    """
    import pandas as pd

    mdata = get_container(data)
    require(label_key in mdata.obs, f"obs[{label_key!r}]", "smo.annotate.annotate(mdata)")
    col = mdata.obs[label_key]
    cats = [
        str(c) for c in (col.cat.categories if isinstance(col.dtype, pd.CategoricalDtype) else sorted(col.unique()))
    ]
    key = Keys.colors(label_key)
    stored = mdata.uns.get(key)
    if stored is not None and len(stored) == len(cats):
        return dict(zip(cats, (str(c) for c in stored), strict=True))
    named = [c for c in cats if c.lower() not in _GREY_LABELS]
    colors = dict(zip(named, _palette(len(named)), strict=True))
    out = {c: colors.get(c, UNKNOWN_COLOR) for c in cats}
    mdata.uns[key] = np.asarray([out[c] for c in cats], dtype=object)
    return out


def colors_for(names: Sequence[str], palette: Mapping[str, str]) -> dict[str, str]:
    """Colours for ``names``: from ``palette`` where known, grey for Unknown-like names, new colours otherwise."""
    extra = [n for n in names if n not in palette and n.lower() not in _GREY_LABELS]
    fresh = iter(c for c in _palette(len(palette) + len(extra) + 1) if c not in set(palette.values()))
    out = {}
    for n in names:
        if n in palette:
            out[n] = palette[n]
        elif n.lower() in _GREY_LABELS:
            out[n] = UNKNOWN_COLOR
        else:
            out[n] = next(fresh)
    return out


@contextlib.contextmanager
def offscreen() -> Iterator[None]:
    """Within this block, plot functions draw on bare Agg figures instead of pyplot's (no window, no state)."""
    token = _OFFSCREEN.set(True)
    try:
        yield
    finally:
        _OFFSCREEN.reset(token)


def new_figure(figsize: tuple[float, float]) -> Figure:
    """A new figure with constrained layout: pyplot's, or a bare Agg one inside :func:`offscreen`."""
    if _OFFSCREEN.get():
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure

        fig = Figure(figsize=figsize, layout="constrained")
        FigureCanvasAgg(fig)
        return fig
    import matplotlib.pyplot as plt

    return plt.figure(figsize=figsize, layout="constrained")


def new_axes(ax: Axes | None, figsize: tuple[float, float]) -> Axes:
    """``ax`` itself, or the single Axes of a new figure."""
    return ax if ax is not None else new_figure(figsize).add_subplot()


def coordinates(mdata: Any) -> np.ndarray:
    """The (n, 2) coordinates in µm from ``obsm['spatial']``."""
    require(Keys.SPATIAL in mdata.obsm, "obsm['spatial'] coordinates", "smo.align.join_by_id (or a reader)")
    return np.asarray(mdata.obsm[Keys.SPATIAL], dtype=np.float64)[:, :2]


def fov_groups(mdata: Any, fov: str | None = None) -> list[tuple[str | None, np.ndarray]]:
    """``[(fov name or None, row indices)]``: one group per field of view, or only ``fov``."""
    if Keys.FOV not in mdata.obs:
        if fov is not None:
            msg = f"fov={fov!r}: the data has no obs[{Keys.FOV!r}] column (a single field of view)."
            raise KeyError(msg)
        return [(None, np.arange(mdata.n_obs))]
    values = mdata.obs[Keys.FOV].astype(str).to_numpy()
    names = list(dict.fromkeys(sorted(values.tolist())))
    if fov is not None:
        if str(fov) not in names:
            msg = f"fov={fov!r} is not a field of view of the data; available: {names[:10]}."
            raise KeyError(msg)
        names = [str(fov)]
    return [(n, np.flatnonzero(values == n)) for n in names]


def subsample(idx: np.ndarray, max_points: int = MAX_POINTS) -> tuple[np.ndarray, bool]:
    """At most ``max_points`` of ``idx`` (a fixed seeded subsample, in the original order); and whether it was cut."""
    if idx.size <= max_points:
        return idx, False
    rng = np.random.default_rng(0)
    return np.sort(rng.choice(idx, size=max_points, replace=False)), True


def setup_spatial_axes(ax: Axes, xy: np.ndarray, title: str) -> float:
    """Equal aspect, y pointing down (image convention), µm labels; return a marker size in points² per cell.

    The marker size makes a cell about as wide as the mean spacing between cells at the axes' size.
    """
    ax.set_aspect("equal")
    ax.set_xlabel("x (µm)")
    ax.set_ylabel("y (µm)")
    ax.set_title(title, fontsize=10)
    if xy.shape[0] == 0:
        return 1.0
    lo, hi = xy.min(axis=0), xy.max(axis=0)
    span = np.maximum(hi - lo, 1e-9)
    pad = 0.02 * span.max() + 1e-9
    ax.set_xlim(lo[0] - pad, hi[0] + pad)
    ax.set_ylim(hi[1] + pad, lo[1] - pad)
    width_in = ax.get_position().width * ax.figure.get_figwidth()
    height_in = ax.get_position().height * ax.figure.get_figheight()
    pt_per_um = min(width_in * 72 / (span[0] + 2 * pad), height_in * 72 / (span[1] + 2 * pad))
    spacing_um = np.sqrt(max(span[0], 1.0) * max(span[1], 1.0) / xy.shape[0])
    size = (0.9 * spacing_um * pt_per_um) ** 2
    return float(np.clip(size, 0.05, 120.0))


def grid_shape(n: int, ncols: int) -> tuple[int, int]:
    """(rows, cols) of a grid of ``n`` panels with at most ``ncols`` columns."""
    cols = max(1, min(ncols, n))
    return (n + cols - 1) // cols, cols


def factor_names(mdata: Any, k: int) -> list[str]:
    """``['F0 · Tregs', ...]``: each factor with its assigned cell type (when annotated)."""
    types = factor_types(mdata, k)
    return [f"F{i}" + (f" · {t}" if t else "") for i, t in enumerate(types)]


def factor_types(mdata: Any, k: int) -> list[str]:
    """Cell type assigned to each of the ``k`` factors by the annotation (empty strings when not annotated)."""
    nmf = mdata.uns.get(Keys.NMF_UNS)
    ann = nmf.get("annotation") if isinstance(nmf, Mapping) else None
    if ann is None:
        ann = mdata.uns.get("annotation")
    if not isinstance(ann, Mapping) or "cell_type" not in ann:
        return [""] * k
    types = [str(t) for t in np.asarray(ann["cell_type"]).tolist()]
    factors = np.asarray(ann.get("factor", np.arange(len(types)))).astype(int).tolist()
    out = [""] * k
    for f, t in zip(factors, types, strict=False):
        if 0 <= f < k:
            out[f] = t
    return out


def graph_radius_text(mdata: Any) -> str:
    """``' within 50 µm'`` for a stored radius graph, ``' (k = 6 nearest)'`` for kNN, else ``''``."""
    params = (mdata.uns.get(Keys.GRAPH_UNS) or {}).get("params") or {}
    for key, fmt in (("radius", " within {:g} µm"), ("n_neighbors", " ({:g} nearest)")):
        try:
            return fmt.format(float(params.get(key)))
        except (TypeError, ValueError):
            continue
    return ""


def color_strip(ax: Axes, colors: Sequence[str], *, where: str) -> Axes:
    """A thin strip of colour cells along the ``'top'`` or ``'left'`` edge of a heatmap ``ax``."""
    from matplotlib.colors import to_rgb

    rgb = np.array([to_rgb(c) for c in colors])[None, :, :]
    if where == "top":
        strip = ax.inset_axes((0.0, 1.005, 1.0, 0.025 if len(colors) > 1 else 0.05))
        strip.imshow(rgb, aspect="auto", interpolation="nearest")
    else:
        strip = ax.inset_axes((-0.03, 0.0, 0.025, 1.0))
        strip.imshow(rgb.transpose(1, 0, 2), aspect="auto", interpolation="nearest")
    strip.set_axis_off()
    return strip
