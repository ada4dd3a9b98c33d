"""joint_nmf: the container-level twin of :class:`~spatialmultiomics.factorize.JointNMF` on a MuData."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics.factorize._estimator import JointNMF
from spatialmultiomics.factorize._solvers import DEFAULT_TOL

if TYPE_CHECKING:
    from anndata import AnnData
    from mudata import MuData

__all__ = ["JointNMFResult", "joint_nmf", "project"]


@dataclass(frozen=True, eq=False)
class JointNMFResult:
    """Result of :func:`joint_nmf` with ``inplace=False``.

    Attributes
    ----------
    W
        Cell loadings, array of shape (n_obs, n_components), float32 (rows in the order of ``mdata.obs_names``).
    components
        Modality name -> feature loadings ``H_b``, array of shape (n_components, n_vars_b), float32, in the units
        of the matrix used, with zeros for features that were not used (not highly variable).
    block_scales
        Modality name -> multiplier ``s_b`` of that block in the objective.
    n_iter
        Number of iterations run.
    reconstruction_err
        Frobenius norm of the weighted residual.
    loss_curve
        The same error at the initial factors, every 10 iterations and at the end.
    """

    W: np.ndarray
    components: dict[str, np.ndarray]
    block_scales: dict[str, float]
    n_iter: int
    reconstruction_err: float
    loss_curve: np.ndarray = field(default_factory=lambda: np.empty(0))


def _package_version() -> str:
    """Return the installed version of spatialmultiomics, or ``'unknown'``."""
    try:
        return version("spatialmultiomics")
    except PackageNotFoundError:
        return "unknown"


def _check_modalities(mdata: MuData, modalities: Sequence[str] | str | None) -> list[str]:
    """Return the modality names to factorize, in order, after checking they exist and share their cells."""
    available = list(mdata.mod)
    if modalities is None:
        mods = available
    else:
        mods = [modalities] if isinstance(modalities, str) else list(modalities)
        missing = [m for m in mods if m not in mdata.mod]
        if missing:
            msg = f"modalities {missing} are not in mdata.mod; available: {available}."
            raise InputError(msg)
        if len(set(mods)) != len(mods):
            msg = f"modalities must not repeat a name, got {mods}."
            raise InputError(msg)
    if not mods:
        msg = "mdata has no modality to factorize (mdata.mod is empty)."
        raise InputError(msg)
    ref = mdata.mod[mods[0]].obs_names
    for name in mods[1:]:
        if not mdata.mod[name].obs_names.equals(ref):
            msg = (
                f"modality {name!r} does not have the same obs_names in the same order as {mods[0]!r}; "
                "align the modalities first (smo.align)."
            )
            raise InputError(msg)
    return mods


def _feature_mask(adata: AnnData, name: str, use_highly_variable: bool) -> np.ndarray | None:
    """The features of one modality that the factorization uses: ``var['highly_variable']``, or None for all.

    ``smo.pp.preprocess`` writes that column for every modality: the highly variable genes of a count modality,
    and for an intensity modality every channel except the nuclear / background ones it leaves out.
    """
    if not (use_highly_variable and Keys.HVG in adata.var.columns):
        return None
    col = adata.var[Keys.HVG]
    if col.isna().any():
        msg = f"modality {name!r}: var[{Keys.HVG!r}] has missing values; it must be boolean."
        raise InputError(msg)
    mask = col.to_numpy().astype(bool)
    if not mask.any():
        msg = (
            f"modality {name!r}: var[{Keys.HVG!r}] selects no feature; "
            "select some features or pass use_highly_variable=False."
        )
        raise InputError(msg)
    return None if mask.all() else mask


def _n_features_used(
    mdata: MuData, modalities: Sequence[str] | None = None, *, use_highly_variable: bool = True
) -> dict[str, int]:
    """Modality name -> number of features :func:`joint_nmf` factorizes (the columns of its joint matrix)."""
    out = {}
    for name in _check_modalities(mdata, modalities):
        mask = _feature_mask(mdata.mod[name], name, use_highly_variable)
        out[name] = mdata.mod[name].n_vars if mask is None else int(mask.sum())
    return out


def _select(adata: AnnData, name: str, layer: str | None, use_highly_variable: bool) -> tuple[Any, np.ndarray | None]:
    """Return the matrix of one modality (restricted to its highly variable features) and the feature mask."""
    use_layer = layer is not None and layer in adata.layers
    X = adata.layers[layer] if use_layer else adata.X
    logger.debug("joint_nmf: modality %r uses %s", name, f"layers[{layer!r}]" if use_layer else "X")
    if X is None:
        msg = f"modality {name!r} has no matrix: adata.X is None and layer {layer!r} is absent."
        raise InputError(msg)
    mask = _feature_mask(adata, name, use_highly_variable)
    if mask is None:
        return X, None
    idx = np.flatnonzero(mask)
    return (X[:, idx] if sp.issparse(X) or hasattr(X, "dask") else np.asarray(X)[:, idx]), mask


def _weights(modality_weights: Any, mods: list[str]) -> Any:
    """Turn a ``{modality: weight}`` mapping into a list in modality order; pass anything else through."""
    if not isinstance(modality_weights, Mapping):
        return modality_weights
    missing = [m for m in mods if m not in modality_weights]
    extra = [m for m in modality_weights if m not in mods]
    if missing or extra:
        msg = f"modality_weights must give one weight per modality {mods}; missing {missing}, unknown {extra}."
        raise InputError(msg)
    return [modality_weights[m] for m in mods]


def _storable(value: Any) -> Any:
    """Return ``value`` in a form that ``.h5mu`` can store in ``uns`` (a Generator seed becomes its repr)."""
    if isinstance(value, Mapping):
        return {str(k): _storable(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_storable(v) for v in value]
    if value is None or isinstance(value, str | bool | int | float | np.generic | np.ndarray):
        return value
    return repr(value)


def joint_nmf(
    mdata: MuData,
    *,
    n_components: int = 10,
    modalities: Sequence[str] | None = None,
    layer: str | None = Keys.PREPROCESSED,
    use_highly_variable: bool = True,
    solver: str = "hals",
    modality_weights: Sequence[float] | Mapping[str, float] | str | None = None,
    max_iter: int = 400,
    tol: float = DEFAULT_TOL,
    seed: int | None = 0,
    batch_size: int = 4096,
    backend: str = "numpy",
    n_jobs: int = 1,
    device: str | None = None,
    inplace: bool = True,
) -> JointNMFResult | None:
    """Factorize the modalities of a MuData jointly into shared factors (joint NMF).

    For each modality the matrix ``adata.layers[layer]`` is used when that layer exists, else ``adata.X``,
    restricted to ``adata.var['highly_variable']`` when that column exists and ``use_highly_variable`` is set
    (:func:`smo.pp.preprocess` writes it: highly variable genes, and every protein channel but the nuclear and
    background ones).
    The blocks are weighted and factorized by :class:`~spatialmultiomics.factorize.JointNMF` as
    ``X_b ~ W @ H_b`` with cell loadings ``W`` shared by all modalities.

    Parameters
    ----------
    mdata
        MuData whose modalities share the same ``obs_names`` in the same order (as after ``smo.align``).
    n_components
        Number of factors ``k``.
    modalities
        Names of the modalities to use, in order; default all of ``mdata.mod``.
    layer
        Layer holding the values to factorize (non-negative); modalities without it use ``adata.X``.
    use_highly_variable
        Restrict each modality to ``var['highly_variable']`` when that column exists (features outside it get
        zero loadings); False uses every feature, e.g. the DNA channels of a protein panel.
    solver
        ``'hals'`` (coordinate descent), ``'mu'`` (multiplicative updates) or ``'minibatch'`` (online HALS over
        batches of ``batch_size`` cells, for millions of cells); see :class:`~spatialmultiomics.factorize.JointNMF`.
    modality_weights
        None (balanced: each block scaled to unit Frobenius norm, so every modality counts equally), a sequence
        of positive floats (one per modality, in order) or a mapping modality -> weight (relative
        contributions), or ``'none'`` (blocks concatenated unscaled).
    max_iter
        Maximum number of iterations.
    tol
        Stop when the relative decrease of the reconstruction error still expected is below ``tol`` and at most
        1 % of the cells changed their dominant factor in the last iteration (see
        :class:`~spatialmultiomics.factorize.JointNMF`); smaller values run on towards the exact optimum.
    seed
        Seed of the initialisation; the result is deterministic for a given seed.
    batch_size
        Cells per mini-batch (``solver='minibatch'`` only).
    backend
        ``'numpy'`` (default), ``'torch'`` (GPU when available; extra ``[torch]``) or ``'dask'`` (row chunks on
        the current Dask scheduler, e.g. a ``dask.distributed`` Client; extra ``[dask]``; the matrices of the
        modalities may be Dask arrays). See :class:`~spatialmultiomics.factorize.JointNMF`.
    n_jobs
        Threads of the NumPy backend's kernels for large inputs (-1: all cores); the result does not depend on it.
    device
        ``backend='torch'``: ``'cuda'`` or ``'cpu'``; None (default): CUDA when PyTorch sees a GPU.
    inplace
        True: write the result into ``mdata`` and return None. False: leave ``mdata`` untouched and return a
        :class:`JointNMFResult`.

    Returns
    -------
    None with ``inplace=True``, after writing:

    - ``mdata.obsm['X_nmf']``: cell loadings ``W``, array (n_obs, n_components), float32;
    - ``mdata[mod].varm['nmf_loadings']`` for each modality used: ``H_b.T``, array (n_vars, n_components),
      float32, zeros for features not used;
    - ``mdata.uns['nmf']``: dict with ``'params'`` (the arguments and the package version), ``'modalities'``,
      ``'block_scales'`` (array, one per modality), ``'n_iter'``, ``'reconstruction_err'`` and
      ``'loss_curve'`` (array).

    A :class:`JointNMFResult` with ``inplace=False``.

    Examples
    --------
    >>> import anndata as ad, mudata as md, numpy as np
    >>> from spatialmultiomics.factorize import joint_nmf
    >>> rng = np.random.default_rng(0)
    >>> rna, prot = ad.AnnData(rng.random((40, 20))), ad.AnnData(rng.random((40, 4)))
    >>> rna.var_names = [f"gene{i}" for i in range(20)]
    >>> prot.var_names, prot.obs_names = [f"protein{i}" for i in range(4)], rna.obs_names
    >>> with md.set_options(pull_on_update=False):
    ...     mdata = md.MuData({"rna": rna, "protein": prot})
    >>> joint_nmf(mdata, n_components=3, max_iter=1000)
    >>> mdata.obsm["X_nmf"].shape, mdata["protein"].varm["nmf_loadings"].shape
    ((40, 3), (4, 3))
    """
    mods = _check_modalities(mdata, modalities)
    if inplace:
        ref = mdata.mod[mods[0]].obs_names
        if not mdata.obs_names.equals(ref):
            import mudata

            with mudata.set_options(pull_on_update=False):  # a stale MuData: refresh obs_names, pull no columns
                mdata.update()
        if not mdata.obs_names.equals(ref):
            msg = (
                f"mdata.obs_names differ from the obs_names of modality {mods[0]!r}; cannot store obsm[{Keys.NMF!r}] "
                "(every modality of mdata must share the same cells in the same order)."
            )
            raise InputError(msg)
    selected = [_select(mdata.mod[name], name, layer, use_highly_variable) for name in mods]
    model = JointNMF(
        n_components,
        solver=solver,
        modality_weights=_weights(modality_weights, mods),
        max_iter=max_iter,
        tol=tol,
        seed=seed,
        batch_size=batch_size,
        backend=backend,
        n_jobs=n_jobs,
        device=device,
    )
    try:
        W = model.fit_transform([X for X, _ in selected])
        if hasattr(W, "compute"):  # Dask backend: the loadings are stored in the container
            W = np.asarray(W.compute())
    except InputError as err:  # name the modality instead of the block index
        msg = str(err)
        for i, name in enumerate(mods):
            msg = msg.replace(f"blocks[{i}]", f"modality {name!r}")
        raise InputError(msg) from None
    components: dict[str, np.ndarray] = {}
    for name, (_, mask), H in zip(mods, selected, model.components_, strict=True):
        if mask is None:
            components[name] = H
        else:
            full = np.zeros((H.shape[0], mask.size), dtype=np.float32)
            full[:, mask] = H
            components[name] = full
    scales = {name: float(s) for name, s in zip(mods, model.block_scales_, strict=True)}
    logger.info(
        "joint_nmf: %d factors on %s after %d iterations, reconstruction error %.4g",
        model.n_components_,
        mods,
        model.n_iter_,
        model.reconstruction_err_,
    )
    if not inplace:
        return JointNMFResult(
            W=W,
            components=components,
            block_scales=scales,
            n_iter=int(model.n_iter_),
            reconstruction_err=float(model.reconstruction_err_),
            loss_curve=np.asarray(model.loss_curve_),
        )
    mdata.obsm[Keys.NMF] = W
    for name in mods:
        mdata.mod[name].varm[Keys.NMF_LOADINGS] = np.ascontiguousarray(components[name].T)
    params = {
        "n_components": n_components,
        "modalities": list(mods),
        "layer": layer,
        "use_highly_variable": use_highly_variable,
        "solver": solver,
        "modality_weights": modality_weights,
        "max_iter": max_iter,
        "tol": tol,
        "seed": seed,
        "batch_size": batch_size,
        "backend": backend,
        "n_jobs": n_jobs,
        "inplace": inplace,
        "version": _package_version(),
    }
    mdata.uns[Keys.NMF_UNS] = {
        "params": _storable(params),
        "modalities": list(mods),
        "block_scales": np.asarray([scales[m] for m in mods], dtype=np.float64),
        "n_iter": int(model.n_iter_),
        "reconstruction_err": float(model.reconstruction_err_),
        "loss_curve": np.asarray(model.loss_curve_, dtype=np.float64),
    }
    return None


def project(
    mdata: MuData,
    modalities: Sequence[str] | str,
    *,
    cells: np.ndarray | None = None,
    n_jobs: int = 1,
) -> np.ndarray:
    """Cell loadings from some modalities only, with the loadings of the joint factorization held fixed.

    For the cells of ``mdata`` (or the rows ``cells``), solves ``min_W sum_b s_b^2 ||X_b - W H_b||_F^2`` over the
    given modalities ``b`` alone, with the feature loadings ``H_b`` and block scales ``s_b`` that
    :func:`joint_nmf` stored and the same matrices it used (layer, highly variable features). The result lies in the
    joint factor space, so cells measured in fewer modalities (a reference cell whose partner in another modality
    was imputed) can be compared with fully measured cells on the modalities both have.

    Parameters
    ----------
    mdata
        A MuData after :func:`joint_nmf` (``inplace=True``).
    modalities
        The modalities to fit on, a subset of those factorized.
    cells
        Integer positions of the cells to project; None: all.
    n_jobs
        Threads of the numba kernels.

    Returns
    -------
    ``W``, array of shape (n_cells, n_components), float32.

    Examples
    --------
    >>> import anndata as ad, mudata as md, numpy as np
    >>> from spatialmultiomics.factorize import joint_nmf, project
    >>> rng = np.random.default_rng(0)
    >>> rna, prot = ad.AnnData(rng.random((40, 20))), ad.AnnData(rng.random((40, 4)))
    >>> rna.var_names = [f"gene{i}" for i in range(20)]
    >>> prot.var_names, prot.obs_names = [f"protein{i}" for i in range(4)], rna.obs_names
    >>> with md.set_options(pull_on_update=False):
    ...     mdata = md.MuData({"rna": rna, "protein": prot})
    >>> joint_nmf(mdata, n_components=3, max_iter=1000)
    >>> project(mdata, "rna", cells=np.arange(5)).shape
    (5, 3)
    """
    from spatialmultiomics.factorize._estimator import fixed_loadings_nnls

    info = mdata.uns.get(Keys.NMF_UNS)
    if not isinstance(info, Mapping) or "block_scales" not in info:
        msg = f"project needs the joint factorization: mdata.uns[{Keys.NMF_UNS!r}] is missing; run joint_nmf first."
        raise InputError(msg)
    fitted = [str(m) for m in info["modalities"]]
    wanted = [modalities] if isinstance(modalities, str) else [str(m) for m in modalities]
    unknown = [m for m in wanted if m not in fitted]
    if not wanted or unknown:
        msg = f"modalities {unknown or wanted!r}: project takes a non-empty subset of the factorized {fitted!r}."
        raise InputError(msg)
    params = info.get("params", {})
    layer = params.get("layer", Keys.PREPROCESSED)
    use_hvg = bool(params.get("use_highly_variable", True))
    scales = dict(zip(fitted, np.asarray(info["block_scales"], dtype=np.float64), strict=True))
    rows = None if cells is None else np.asarray(cells, dtype=np.int64)
    Xs, Hs = [], []
    for name in wanted:
        X, mask = _select(mdata.mod[name], name, layer, use_hvg)
        loadings = np.asarray(mdata.mod[name].varm[Keys.NMF_LOADINGS], dtype=np.float32)  # (n_vars, k)
        H = np.ascontiguousarray((loadings if mask is None else loadings[mask]).T)
        if rows is not None:
            X = X[rows]
        X = sp.csr_matrix(X, dtype=np.float32) if sp.issparse(X) else np.ascontiguousarray(X, dtype=np.float32)
        Xs.append(X)
        Hs.append(H)
    return fixed_loadings_nnls(
        Xs,
        Hs,
        [scales[m] for m in wanted],
        solver="hals",
        max_iter=int(params.get("max_iter", 400) or 400),
        tol=float(params.get("tol", DEFAULT_TOL) or DEFAULT_TOL),
        n_threads=n_jobs,
        caller="project",
    )
