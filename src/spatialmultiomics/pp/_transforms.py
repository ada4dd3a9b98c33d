"""Channel transforms of intensity modalities and the rule that picks one per modality (``'auto'``).

Array functions only (no AnnData): :func:`smo.pp.scale_intensities` validates, calls them and stores the result.

Transforms
----------
``arcsinh``
    ``arcsinh(x / c)``: linear below the cofactor ``c``, logarithmic above it (the cytometry transform). ``c`` is
    one number for the modality or one per channel.
``clr``
    Centred log-ratio of antibody-derived counts (CITE-seq ADT), per cell across the channels, in the form of
    Seurat's ``NormalizeData(normalization.method = "CLR", margin = 2)`` and muon's ``prot.pp.clr(axis=1)``:
    ``log1p(x_ij / g_i)`` with ``g_i = exp(mean_j log1p(x_ij))``, the cell's geometric mean (of ``1 + x``) over
    its channels. Per cell because that is what the CITE-seq workflows use (Stoeckius et al. 2017; the Seurat
    multimodal and WNN vignettes): it removes the cell's antibody-tag sequencing depth, which varies between cells
    far more than real protein levels of a large panel do. It assumes a panel of many antibodies; with two or three
    channels the cell's mean is dominated by its own markers (Seurat then recommends the per-channel margin).
    Needs no fitted parameter, so new cells are transformed exactly alike.
``log1p``, ``none``
    ``log(1 + x)``, or the values as they are.

The ``'auto'`` rule (:func:`choose_transform`)
----------------------------------------------
1. **Antibody-derived counts** (non-negative integers, at least two channels) from a platform that is not an
   imaging cytometry platform (``generic`` tables, Xenium, unknown) -> ``clr``. Imaging platforms measure
   intensities even when a table stores them rounded, so CODEX / CyCIF / IMC / MIBI never get CLR.
2. **Mass cytometry imaging** (``imc``, ``mibi``) with integer ion counts -> ``arcsinh`` with cofactor 5 (Bendall
   et al. 2011: ion counts below about five are counting noise). Per-pixel mean counts (steinbock) and
   size-normalised counts (ark) are not counts any more: a cofactor in counts has no meaning in their units, so
   they get the data-driven cofactor of rule 3.
3. **Fluorescence and every other intensity table** (``codex``, ``cycif``, ``generic`` / Xenium Protein mean
   intensities, float values) -> ``arcsinh`` with cofactor 5 in the units of the data, followed (as every
   transform) by the per-channel robust scaling. For 16-bit fluorescence (CyCIF means of 10^3-10^4) this is a log;
   for inForm's unmixed means (0.1-50) it is linear near the background and a log above.

The per-channel **background cofactor** (``protein_transform='arcsinh_background'``: the lower quartile of the
channel's positive values, :func:`background_cofactors`) was built as rule 3 and measured against cofactor 5 on
the real labelled sets (``docs/transforms.md``): equal on the CyCIF exemplar, worse on the Vectra sample (KMeans
ARI 0.40 vs 0.57; cluster annotation ARI 0.45 vs 0.74), where background-subtracted channels get cofactors of
0.016 that spread their noise. It stays available; the reasoning behind it:

Why the background cofactor: ``arcsinh(x / c)`` is linear below ``c`` and logarithmic above it. Cytometrists set
``c`` at the width of the negative population (150 for flow fluorescence, 5 for ion counts), so that background
stays on a linear scale (a log would stretch its noise near zero into a spread-out "dim" cloud) while positive
cells, one or more decades brighter, are compressed like a log. Imaging channels differ in background by orders of
magnitude (exposure, antibody, autofluorescence per wavelength, camera offset: CyCIF means of 10^3-10^4, inForm
means of 0.1-10), so one number cannot fit them all, and the fixed cofactor 5 makes the 16-bit CyCIF channels a
plain log and the inForm channels nearly linear. In a multiplexed tissue image most cells are negative for most
markers, so the lower quartile of a channel (the level the dimmest quarter of its cells does not exceed; the
background measure CellProfiler reports as ``LowerQuartileIntensity``) lies in the negative population: it is the
background level with an offset, and the noise width when the background was subtracted. Exact zeros (values
clipped or not detected) are left out. When more than three quarters of the cells are positive the cofactor lands
among the dim positives, which only makes the transform more linear there.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = [
    "BACKGROUND_QUANTILE",
    "MASS_CYTOMETRY_COFACTOR",
    "PROTEIN_TRANSFORMS",
    "TransformChoice",
    "background_cofactors",
    "choose_transform",
    "clr",
    "is_count_matrix",
    "transform_channels",
]

#: ``protein_transform`` options; ``'auto'`` resolves to one of the others per modality.
PROTEIN_TRANSFORMS: tuple[str, ...] = ("auto", "arcsinh", "arcsinh_background", "clr", "log1p", "none")

#: Arcsinh cofactor of mass cytometry ion counts (Bendall et al. 2011).
MASS_CYTOMETRY_COFACTOR = 5.0

#: Quantile of a channel's positive values taken as its background level (the data-driven arcsinh cofactor).
BACKGROUND_QUANTILE = 0.25

_ROWS_PER_CHUNK = 65536
_MASS_CYTOMETRY = frozenset({"imc", "mibi"})
# immunofluorescence: CODEX / PhenoCycler, CyCIF, CosMx protein panels and the per-cell exports of inForm (Vectra),
# QuPath and HALO (HALO often writes integer 0-255 intensities, which must not be taken for antibody counts)
_FLUORESCENCE = frozenset({"codex", "cycif", "cosmx", "inform", "qupath", "halo"})
_IMAGING = _MASS_CYTOMETRY | _FLUORESCENCE
_KIND = {"imc": "mass cytometry", "mibi": "mass cytometry", **dict.fromkeys(_FLUORESCENCE, "fluorescence")}


@dataclass(frozen=True)
class TransformChoice:
    """The transform of one intensity modality: name, cofactors (arcsinh only), rule and why it was chosen.

    Attributes
    ----------
    transform
        ``'arcsinh'``, ``'clr'``, ``'log1p'`` or ``'none'``.
    cofactor
        Per-channel arcsinh cofactors, shape (n_channels,) float64; None for the other transforms.
    rule
        ``'fixed'`` (one cofactor for every channel), ``'background'`` (per channel, :func:`background_cofactors`)
        or ``''``.
    reason
        One line saying what was chosen and why, e.g. ``"platform mibi, ion counts: arcsinh cofactor 5"``.
    """

    transform: str
    cofactor: np.ndarray | None
    rule: str
    reason: str


def is_count_matrix(X: np.ndarray | sp.spmatrix) -> bool:
    """True when every value of ``X`` is a non-negative whole number (counts; stored as int or float)."""
    data = X.data if sp.issparse(X) else np.asarray(X)
    if data.size == 0:
        return False
    if np.issubdtype(data.dtype, np.integer):
        return bool(data.min() >= 0)
    data = data.reshape(len(data), -1) if data.ndim else data.reshape(1, 1)
    for r0 in range(0, len(data), _ROWS_PER_CHUNK):  # stops at the first block that is not counts
        block = data[r0 : r0 + _ROWS_PER_CHUNK]
        if not (np.all(np.isfinite(block)) and block.min() >= 0 and np.array_equal(block, np.floor(block))):
            return False
    return True


def background_cofactors(X: np.ndarray | sp.spmatrix, *, quantile: float = BACKGROUND_QUANTILE) -> np.ndarray:
    """Per-channel arcsinh cofactor at the channel's background: the ``quantile`` of its positive values.

    Parameters
    ----------
    X
        Intensities, cells x channels (dense or sparse, non-negative).
    quantile
        Quantile (0-1) of the positive values; default the lower quartile (see the module notes for why).

    Returns
    -------
    Array of float64, shape (n_channels,); 1.0 for a channel without any positive value (its transform is 0).
    """
    n = X.shape[1]
    out = np.ones(n, dtype=np.float64)
    if sp.issparse(X):
        Xc = sp.csc_matrix(X)
        cols = (Xc.data[Xc.indptr[j] : Xc.indptr[j + 1]] for j in range(n))
    else:
        Xd = np.asarray(X)
        cols = (Xd[:, j] for j in range(n))
    for j, col in enumerate(cols):
        pos = col[col > 0]
        if pos.size:
            out[j] = float(np.quantile(pos.astype(np.float64), quantile))
    return out


def clr(X: np.ndarray | sp.spmatrix) -> np.ndarray:
    """Centred log-ratio per cell: ``log1p(x_ij / g_i)``, ``g_i = exp(mean_j log1p(x_ij))`` (dense float32).

    Sparse input is read without densifying it; only the result (cells x channels) is dense.
    """
    n_obs, n_ch = X.shape
    if sp.issparse(X):
        Xr = sp.csr_matrix(X, dtype=np.float64)  # a copy unless X is CSR float64 already
        if not Xr.has_canonical_format:
            Xr = Xr.copy()
            Xr.sum_duplicates()
        counts = np.diff(Xr.indptr)
        logs = sp.csr_matrix((np.log1p(Xr.data), Xr.indices, Xr.indptr), shape=Xr.shape)
        g = np.exp(np.asarray(logs.sum(axis=1)).ravel() / max(n_ch, 1))
        Y = np.zeros((n_obs, n_ch), dtype=np.float32)
        rows = np.repeat(np.arange(n_obs), counts)
        Y[rows, Xr.indices] = np.log1p(Xr.data / g[rows])
        return Y
    Y = np.array(X, dtype=np.float32, copy=True)
    for r0 in range(0, n_obs, _ROWS_PER_CHUNK):  # a block of rows at a time: no temporary of the whole matrix
        block = Y[r0 : r0 + _ROWS_PER_CHUNK]
        g = np.exp(np.log1p(block).mean(axis=1, dtype=np.float64)) if n_ch else np.ones(len(block))
        block /= g[:, None].astype(np.float32)
        np.log1p(block, out=block)
    return Y


def transform_channels(X: np.ndarray | sp.spmatrix, transform: str, cofactor: float | np.ndarray) -> np.ndarray:
    """Return the channel transform of ``X`` (dense float32, a new array); ``cofactor`` scalar or per channel."""
    if transform == "clr":
        return clr(X)
    Y = np.array(X.toarray() if sp.issparse(X) else X, dtype=np.float32, copy=True)
    if transform == "arcsinh":
        Y /= np.asarray(cofactor, dtype=np.float32)
        np.arcsinh(Y, out=Y)
    elif transform == "log1p":
        np.log1p(Y, out=Y)
    return Y


def _describe(c: np.ndarray) -> str:
    if c.size and np.all(c == c[0]):
        return f"cofactor {c[0]:.4g}"
    return f"cofactor per channel {c.min():.3g}-{c.max():.3g} (median {np.median(c):.3g})"


def choose_transform(
    X: np.ndarray | sp.spmatrix, *, platform: str, transform: str = "auto", cofactor: float = 5.0
) -> TransformChoice:
    """Resolve ``transform`` for one intensity modality (``'auto'``: the rule in the module notes).

    Parameters
    ----------
    X
        The modality's raw values, cells x channels (finite, non-negative).
    platform
        Canonical platform name (``adata.uns['provenance']['platform']``; ``'generic'`` when unknown).
    transform
        ``'auto'``, ``'arcsinh'``, ``'clr'``, ``'log1p'`` or ``'none'`` (lower case, validated by the caller).
    cofactor
        The cofactor of ``transform='arcsinh'`` (every channel).
    """
    n_ch = X.shape[1]
    if transform == "arcsinh":
        c = np.full(n_ch, float(cofactor))
        return TransformChoice("arcsinh", c, "fixed", f"requested: arcsinh {_describe(c)}")
    if transform == "arcsinh_background":
        c = background_cofactors(X)
        return TransformChoice(
            "arcsinh", c, "background", f"requested: arcsinh, {_describe(c)} at the background (lower quartile)"
        )
    if transform != "auto":
        return TransformChoice(transform, None, "", f"requested: {transform}")
    counts = is_count_matrix(X)
    where = f"platform {platform}" + (f" ({_KIND[platform]})" if platform in _KIND else "")
    if counts and platform not in _IMAGING and n_ch >= 2:
        return TransformChoice(
            "clr", None, "", f"{where}, non-negative integer values (antibody counts): CLR per cell across channels"
        )
    if counts and platform in _MASS_CYTOMETRY:
        c = np.full(n_ch, MASS_CYTOMETRY_COFACTOR)
        return TransformChoice("arcsinh", c, "fixed", f"{where}, ion counts: arcsinh cofactor {c[0]:.4g}")
    c = np.full(n_ch, float(cofactor))
    what = "mean counts, not counts" if platform in _MASS_CYTOMETRY else "intensities"
    return TransformChoice(
        "arcsinh",
        c,
        "fixed",
        f"{where}, {what}: arcsinh cofactor {c[0]:.4g} (a log for bright 16-bit channels, near-linear for dim "
        "unmixed ones; the per-channel background cofactor measured worse, see docs/transforms.md)",
    )
