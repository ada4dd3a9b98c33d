"""Every applicable figure of a result, drawn off-screen and saved as PNG plus a vector format."""

from __future__ import annotations

import io
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics.pl._utils import get_container, offscreen

if TYPE_CHECKING:
    from matplotlib.figure import Figure

__all__ = ["FigureSpec", "figure_png", "figure_specs", "freeze_layout", "iter_figures", "save_figures"]

_VECTOR = ("svg", "pdf")


@dataclass(frozen=True)
class FigureSpec:
    """One standard figure: file stem, title and caption for the report, when it applies, and how to draw it."""

    name: str
    title: str
    caption: str
    applies: Callable[[Any], bool]
    draw: Callable[[Any], Any]


def _has_nmf_loadings(m: Any) -> bool:
    mods = getattr(m, "mod", None)
    if mods is None:
        return Keys.NMF_LOADINGS in m.varm
    return any(Keys.NMF_LOADINGS in a.varm for a in mods.values())


def _k_selection(m: Any) -> bool:
    nmf = m.uns.get(Keys.NMF_UNS)
    return isinstance(nmf, Mapping) and isinstance(nmf.get("k_selection"), Mapping)


def _alignment_func() -> Callable[..., Any] | None:
    """The alignment overlay of :mod:`spatialmultiomics.pl._align`, when that module provides one."""
    try:
        from spatialmultiomics.pl import _align
    except ImportError:
        return None
    for name in ("alignment", "alignment_overlay", "align_overlay"):
        func = getattr(_align, name, None)
        if callable(func):
            return func
    return None


def _alignment_applies(m: Any) -> bool:
    info = m.uns.get("alignment")
    if not isinstance(info, Mapping) or _alignment_func() is None:
        return False
    return str(info.get("route", "ids")) != "ids"


def figure_specs() -> list[FigureSpec]:
    """The standard figures, in report order."""
    from spatialmultiomics import pl

    return [
        FigureSpec(
            "spatial_cell_types",
            "Cell types in space",
            "Each cell (or spot) at its position in µm, coloured by its cell type; one panel per field of view. "
            "The same colour stands for the same type in every figure.",
            lambda m: Keys.CELL_TYPE in m.obs and Keys.SPATIAL in m.obsm,
            pl.spatial_cell_types,
        ),
        FigureSpec(
            "spot_composition",
            "Spot composition",
            "Each spot as a pie of the cell types of the single cells under it (typed with the joint factors), at "
            "its position in µm; the spot's label in the other figures is its largest slice.",
            lambda m: Keys.COMPOSITION in m.obsm and Keys.SPATIAL in m.obsm,
            pl.spot_composition,
        ),
        FigureSpec(
            "factor_loadings",
            "Factor loadings",
            "Top genes and proteins of each joint-NMF factor (rows), scaled to each factor's largest loading; "
            "columns carry the cell type assigned to each factor.",
            _has_nmf_loadings,
            pl.factor_loadings,
        ),
        FigureSpec(
            "colocalization",
            "Co-localization",
            "Observed vs expected neighbour pairs for every pair of cell types (z-score under random relabelling "
            "of cells on the same neighbour graph); stars mark significant pairs by Benjamini-Hochberg q-value.",
            lambda m: isinstance(m.uns.get(Keys.nhood(Keys.CELL_TYPE)), Mapping),
            pl.colocalization,
        ),
        FigureSpec(
            "niches",
            "Niches",
            "Each cell coloured by its niche: the cellular neighbourhood cluster when computed, else the most "
            "frequent cell type among its neighbours.",
            lambda m: (Keys.NICHE in m.obs or Keys.NICHE_TYPE in m.obs) and Keys.SPATIAL in m.obsm,
            pl.niches,
        ),
        FigureSpec(
            "factor_maps",
            "Factor activity in space",
            "Each factor's loading per cell, scaled to its 99.5th percentile, at the cells' positions.",
            lambda m: Keys.NMF in m.obsm and Keys.SPATIAL in m.obsm,
            pl.factor_maps,
        ),
        FigureSpec(
            "alignment",
            "Alignment",
            "The two modalities' cells on the common coordinate frame after alignment.",
            _alignment_applies,
            lambda m: _alignment_func()(m),  # type: ignore[misc]
        ),
        FigureSpec(
            "k_selection",
            "Choice of the number of factors",
            "The criteria computed for each candidate number of factors k, and the k chosen.",
            _k_selection,
            pl.k_selection,
        ),
    ]


def _as_figure(drawn: Any) -> Figure:
    first = drawn[0] if isinstance(drawn, list | tuple) else drawn
    return first if hasattr(first, "savefig") else first.figure


def iter_figures(data: Any, *, names: Sequence[str] | None = None) -> Iterator[tuple[FigureSpec, Figure]]:
    """Draw each applicable standard figure off-screen; yield ``(spec, figure)``.

    A figure whose result is missing is skipped; one that fails to draw is logged and skipped, so one broken
    figure never costs the others (or the results they accompany). The caller owns the figures.
    """
    mdata = get_container(data)
    for spec in figure_specs():
        if names is not None and spec.name not in names:
            continue
        try:
            if not spec.applies(mdata):
                logger.debug("figure %s: not applicable", spec.name)
                continue
            with offscreen():
                fig = _as_figure(spec.draw(mdata))
        except Exception as err:  # noqa: BLE001 - a figure must never sink the results it illustrates
            logger.warning("figure %s could not be drawn: %s: %s", spec.name, type(err).__name__, err)
            continue
        yield spec, fig


def figure_png(fig: Figure, *, dpi: int = 120) -> bytes:
    """PNG bytes of ``fig``."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    return buf.getvalue()


def save_figures(
    data: Any,
    folder: str | Path,
    *,
    formats: Sequence[str] = ("png", "svg"),
    dpi: int = 120,
) -> dict[str, list[Path]]:
    """Write every applicable standard figure of a result into ``folder``, as PNG plus a vector format.

    Figures: ``spatial_cell_types``, ``factor_loadings``, ``colocalization``, ``niches``, ``factor_maps``,
    ``alignment`` (when the modalities were aligned by coordinates) and ``k_selection`` (when k was chosen
    automatically). Each reads stored results only; a figure whose result is missing is skipped.

    Parameters
    ----------
    data
        MuData / AnnData with results, or a :class:`~spatialmultiomics.PipelineResult`.
    folder
        Output folder (created).
    formats
        File formats: ``'png'`` and/or ``'svg'`` / ``'pdf'``. Scatter points are rasterized inside vector files
        so they stay small at a million cells.
    dpi
        Resolution of the PNG files.

    Returns
    -------
    dict mapping each figure name to the files written.
    """
    import matplotlib as mpl

    formats = [str(f).lower().lstrip(".") for f in formats]
    bad = [f for f in formats if f not in ("png", *_VECTOR)]
    if bad or not formats:
        msg = f"formats={list(formats)!r}: allowed formats are 'png', 'svg' and 'pdf'."
        raise InputError(msg)
    out = Path(folder)
    out.mkdir(parents=True, exist_ok=True)
    written: dict[str, list[Path]] = {}
    # text stays text in vector files (editable, smaller); TrueType fonts in PDF
    with mpl.rc_context({"svg.fonttype": "none", "pdf.fonttype": 42}):
        for spec, fig in iter_figures(data):
            freeze_layout(fig)
            paths = []
            for fmt in formats:
                path = out / f"{spec.name}.{fmt}"
                fig.savefig(path, format=fmt, dpi=dpi)
                paths.append(path)
            _close(fig)
            written[spec.name] = paths
    logger.debug("figures: %s written to %s", ", ".join(written) or "none", out)
    return written


def freeze_layout(fig: Figure) -> None:
    """Run the constrained layout once and keep it, so saving in several formats does not lay out each time."""
    engine = fig.get_layout_engine()
    if engine is not None:
        engine.execute(fig)
        fig.set_layout_engine("none")


def _close(fig: Figure) -> None:
    """Release a figure (a pyplot one is also removed from pyplot's list)."""
    import sys

    plt = sys.modules.get("matplotlib.pyplot")
    if plt is not None:
        plt.close(fig)
    fig.clear()
