"""``annotate(method='cluster')`` out of core: the sample in memory, every other cell assigned chunk by chunk.

The in-memory annotation (:mod:`~spatialmultiomics.annotate._by_cluster`) already works on a sample above
``max_cells`` cells: it clusters and names a seeded sample of ``max_cells`` cells, gives every other cell the
majority cluster of its nearest sampled cells in the joint embedding, then lets cells whose own intensity markers
strongly contradict their cluster take their own type. :func:`annotate_chunked` does exactly that on row-chunked
Dask arrays (a zarr store of ten million cells), never holding more than the sample and one chunk:

1. the same sample rows (``numpy.random.default_rng(seed).choice(n, max_cells)``, sorted) of every modality are
   pulled into memory and annotated with :func:`~spatialmultiomics.annotate.annotate` (``method='cluster'``), the
   library's own code;
2. the pieces the assignment needs are taken from that annotation or fitted on the sample as the in-memory code
   fits them: the joint embedding (per-modality PCA / centring and unit-variance scaling, as
   :func:`~spatialmultiomics.annotate.annotate` fitted it and kept in its record's ``'embedding'``; not fitted
   again), its top 16 principal components, the exact nearest-neighbour reference of at most 20,000 sampled
   cells, the per-cluster names and evidence, the Otsu gates of the intensity markers and the override tree;
3. every chunk is assigned where Dask runs it (``map_blocks``; on the workers of a ``distributed`` cluster): the
   sampled rows keep their own result, the others are embedded, take the majority cluster of their nearest
   reference cells and its name, and are overridden by their own intensity markers as in memory. The nearest
   reference cells are found by the in-memory code's exact search
   (:func:`~spatialmultiomics.annotate._neighbors.exact_neighbors`: k-means groups of the reference with proven
   bounds where they spare most of it, which visited about 7 % of the reference on the 10-million-cell
   benchmark's data, 4.7x faster than brute force; else brute force), with the same neighbours.

The result equals :func:`~spatialmultiomics.annotate._by_cluster.annotate_by_cluster` on the whole matrix with the
same ``max_cells`` and ``seed`` (``tests/annotate/test_chunked.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_positive_int
from spatialmultiomics.annotate._by_cluster import (
    OVERRIDE_CLUSTER,
    OVERRIDE_OWN,
    SOFT_GATE_WIDTH,
    _marker_matrix,
    _tree,
)
from spatialmultiomics.annotate._cluster import apply_embedding, assign_pca, assign_reference
from spatialmultiomics.annotate._markers import load_markers
from spatialmultiomics.annotate._naming import TypeTree, descend, marker_gates
from spatialmultiomics.annotate._neighbors import BruteNeighbors, GroupedNeighbors, exact_neighbors, vote
from spatialmultiomics.annotate._score import DEFAULT_WEIGHTS, UNKNOWN, resolve_weights

if TYPE_CHECKING:
    import dask.array as da
    from mudata import MuData

__all__ = ["ChunkedAnnotation", "annotate_chunked"]


@dataclass(frozen=True, eq=False)
class ChunkedAnnotation:
    """Result of :func:`annotate_chunked`: lazy per-cell columns and the in-memory annotation of the sample.

    Attributes
    ----------
    table
        Dask array (n_cells, 4) float64, chunked like the input rows: cluster, type code (index into ``types``,
        -1 = ``'Unknown'``), confidence, overridden (0/1). Compute it once (``dask.compute`` / ``dask.array.store``)
        rather than each column on its own: every column reads the input again.
    types
        Cell types the codes refer to.
    sample
        Sorted row indices of the clustered sample.
    sample_mdata
        The sample as a MuData, annotated in memory (``obs['cell_type']``, ``obs['annotation_cluster']`` ...).
    params
        Sizes and the annotation record of the sample (``'annotation'``).
    """

    table: da.Array
    types: list[str]
    sample: np.ndarray
    sample_mdata: MuData
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def cluster(self) -> da.Array:
        """Cluster of every cell (lazy, int64)."""
        return self.table[:, 0].astype(np.int64)

    @property
    def codes(self) -> da.Array:
        """Type code of every cell (lazy, int64; -1 = Unknown)."""
        return self.table[:, 1].astype(np.int64)

    @property
    def confidence(self) -> da.Array:
        """Confidence of every cell's type (lazy, float32)."""
        return self.table[:, 2].astype(np.float32)

    @property
    def overridden(self) -> da.Array:
        """True where the cell's own markers overrode its cluster's type (lazy)."""
        return self.table[:, 3] > 0.5

    def names(self, codes: np.ndarray) -> np.ndarray:
        """Type names of computed codes (object array, ``'Unknown'`` for -1)."""
        names = np.array([*self.types, UNKNOWN], dtype=object)
        codes = np.asarray(codes, dtype=np.int64)
        return names[np.where(codes >= 0, codes, len(self.types))]


@dataclass
class _Embedding:
    """One modality's part of the joint embedding, as the in-memory annotation of the sample fitted it."""

    use: np.ndarray | None  # columns of the block in the embedding (None: all)
    fitted: dict[str, Any]  # components, shift, scale (see _cluster.fit_joint_embedding)

    @classmethod
    def from_record(cls, block: Mapping[str, Any], n_features: int) -> _Embedding:
        """From one modality's entry of the annotation record's ``'embedding'`` (arrays, maybe read from h5)."""
        use = np.asarray(block["features"], dtype=np.int64)
        fitted = {"shift": np.asarray(block["shift"], dtype=np.float32), "scale": float(block["scale"])}
        if "components" in block:
            fitted["components"] = np.asarray(block["components"], dtype=np.float32)
        return cls(None if use.size == n_features else use, fitted)

    def apply(self, X: Any) -> np.ndarray:
        return apply_embedding(X if self.use is None else X[:, self.use], self.fitted)


@dataclass
class _Assigner:
    """Everything a worker needs to assign one chunk (fitted on the sample; pickled once per task graph)."""

    n_blocks: int
    sample: np.ndarray
    sample_out: np.ndarray  # (sample, 4): the sample's own result
    embeddings: list[_Embedding | None]  # per input block; None: not in the embedding
    pca: Any  # PCA to the top _TREE_DIMS components, or None
    nn: GroupedNeighbors | BruteNeighbors  # exact nearest neighbours among the reference cells
    ref_lab: np.ndarray
    cluster_codes: np.ndarray
    cluster_conf: np.ndarray
    override: dict[str, Any] | None  # None: no overrides

    def __call__(self, *chunks: Any, block_info: dict | None = None) -> np.ndarray:
        start = int(block_info[0]["array-location"][0][0]) if block_info else 0
        m = chunks[0].shape[0]
        rows = np.arange(start, start + m)
        pos = np.searchsorted(self.sample, rows)
        in_sample = (pos < self.sample.size) & (self.sample[np.minimum(pos, self.sample.size - 1)] == rows)
        out = np.empty((m, 4), dtype=np.float64)
        out[in_sample] = self.sample_out[pos[in_sample]]
        rest = np.flatnonzero(~in_sample)
        if rest.size == 0:
            return out
        # every row is embedded (row-wise, so the same values), then the rest taken: picking rows of a large
        # CSR chunk first costs more than embedding the few sampled rows along
        parts = [e.apply(c) for e, c in zip(self.embeddings, chunks, strict=True) if e is not None]
        E = np.ascontiguousarray(np.hstack(parts)[rest], dtype=np.float32)
        del parts
        if self.pca is not None:
            E = np.asarray(self.pca.transform(E), dtype=np.float32)
        clusters = vote(self.ref_lab, self.nn.kneighbors(E))
        codes = self.cluster_codes[clusters].copy()
        conf = self.cluster_conf[clusters].astype(np.float64)
        overridden = np.zeros(rest.size, dtype=bool)
        ov = self.override
        if ov is not None:
            Ps = np.zeros((rest.size, ov["n_cols"]), dtype=np.float32)
            for b, feats, targets in ov["columns"]:
                X = chunks[b][:, feats]
                Vi = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)[rest]
                Ps[:, targets] = np.clip((Vi - ov["gates"][targets]) / (2 * SOFT_GATE_WIDTH) + 0.5, 0.0, 1.0)
            mine, mine_ev, ev_c = descend(ov["tree"], Ps, return_evidence=True)
            has = codes >= 0
            cur_ev = np.where(has, ev_c[np.arange(rest.size), np.maximum(codes, 0)], 0.0)
            cur_ev[has & ~np.isfinite(cur_ev)] = 1.0
            named = np.isin(mine, ov["cluster_types"])
            flip = named & (mine != codes) & (mine_ev >= OVERRIDE_OWN) & (cur_ev <= OVERRIDE_CLUSTER)
            codes[flip] = mine[flip]
            conf[flip] = np.clip(mine_ev[flip], 0.0, 1.0)
            overridden = flip
        out[rest, 0] = clusters
        out[rest, 1] = codes
        out[rest, 2] = np.clip(conf.astype(np.float32), 0.0, 1.0)
        out[rest, 3] = overridden
        return out


def _assign_chunk(*args: Any, block_info: dict | None = None) -> np.ndarray:
    """One chunk's rows of the result: ``args`` are the chunks of every block, then the :class:`_Assigner`."""
    return args[-1](*args[:-1], block_info=block_info)


def _sample_mudata(
    values: dict[str, Any], var_names: Mapping[str, Sequence[str]], use: Mapping[str, np.ndarray], kinds: dict, obs: Any
) -> MuData:
    import anndata as ad

    from spatialmultiomics._mudata import make_mudata

    mods = {}
    for name, X in values.items():
        adata = ad.AnnData(X=X, obs=pd.DataFrame(index=obs), var=pd.DataFrame(index=[str(v) for v in var_names[name]]))
        adata.layers[Keys.PREPROCESSED] = X
        adata.var[Keys.HVG] = np.asarray(use[name], dtype=bool)
        adata.uns[Keys.PROVENANCE] = {"kind": kinds[name]}
        mods[name] = adata
    return make_mudata(mods)


def annotate_chunked(
    blocks: Mapping[str, da.Array],
    *,
    var_names: Mapping[str, Sequence[str]],
    markers: Any = None,
    extend: bool | str = False,
    highly_variable: Mapping[str, np.ndarray] | None = None,
    kinds: Mapping[str, str] | None = None,
    weights: Mapping[str, float] | None = None,
    max_cells: int = 50_000,
    resolution: float | str = "auto",
    n_neighbors: int = 15,
    override: bool = True,
    seed: int = 0,
) -> ChunkedAnnotation:
    """Annotate cells out of core: cluster and name a sample in memory, assign every chunk where Dask runs it.

    The same result as ``annotate(mdata, method='cluster')`` on the whole matrix (which clusters a sample of
    ``max_cells`` cells and assigns the rest by nearest neighbours, see the module notes), from row-chunked Dask
    arrays; memory: the sample (``max_cells`` rows of every modality) plus one chunk per worker.

    Parameters
    ----------
    blocks
        ``{modality: preprocessed values}`` (cells x features), Dask arrays chunked along the rows alike (chunks
        dense or scipy sparse), in the modalities' order; the values that ``smo.pp.preprocess`` writes to
        ``layers['preprocessed']`` (genes normalised + log1p, proteins transformed + scaled).
    var_names
        ``{modality: feature names}`` (markers are matched against them).
    markers, extend
        The marker reference, as for :func:`~spatialmultiomics.annotate.annotate`.
    highly_variable
        ``{modality: boolean mask}`` of the features in the clustering embedding (``var['highly_variable']``:
        the highly variable genes, the marker channels); all features when None or missing.
    kinds
        ``{modality: 'counts' | 'intensity'}``; default ``'counts'`` for ``'rna'``, ``'intensity'`` otherwise
        (as :func:`~spatialmultiomics.pp.modality_kind`).
    weights
        ``{mod: weight}`` of each modality in the evidence (default ``{'rna': 1.0, 'protein': 1.5}``).
    max_cells
        Cells clustered in memory (the in-memory annotation's 50,000 by default).
    resolution, n_neighbors, override, seed
        As for :func:`~spatialmultiomics.annotate.annotate` (``method='cluster'``).

    Returns
    -------
    ChunkedAnnotation
        Lazy per-cell table (cluster, type code, confidence, overridden), the types, the sample and its
        in-memory annotation.

    Raises
    ------
    InputError
        When ``blocks`` is empty, not Dask arrays, or the blocks differ in rows or row chunks; when
        ``var_names`` or ``highly_variable`` do not match the columns; and as
        :func:`~spatialmultiomics.annotate.annotate` for the markers.

    Examples
    --------
    >>> import dask.array as da
    >>> import spatialmultiomics as smo
    >>> mdata = smo.datasets.synthetic_tissue(1500, seed=0, n_genes=300)
    >>> smo.pp.preprocess(mdata)
    >>> blocks = {m: da.from_array(mdata[m].layers["preprocessed"], chunks=(400, -1)) for m in mdata.mod}
    >>> res = smo.annotate.annotate_chunked(
    ...     blocks,
    ...     var_names={m: mdata[m].var_names for m in mdata.mod},
    ...     highly_variable={m: mdata[m].var["highly_variable"].to_numpy() for m in mdata.mod},
    ...     max_cells=500,
    ... )
    >>> codes = res.codes.compute()
    >>> codes.shape
    (1500,)
    """
    import dask
    import dask.array as da

    from spatialmultiomics.annotate._assign import annotate

    if not blocks:
        msg = "blocks must hold at least one modality ({modality: dask array}), got none."
        raise InputError(msg)
    names = list(blocks)
    arrays = []
    for name in names:
        X = blocks[name]
        if not isinstance(X, da.Array) or X.ndim != 2:
            msg = f"blocks[{name!r}] must be a two-dimensional Dask array (cells x features), got {type(X).__name__}."
            raise InputError(msg)
        if X.numblocks[1] > 1:
            X = X.rechunk({1: -1})
        arrays.append(X)
    n = int(arrays[0].shape[0])
    for name, X in zip(names, arrays, strict=True):
        if X.shape[0] != n or X.chunks[0] != arrays[0].chunks[0]:
            msg = (
                f"blocks[{name!r}] must have the rows and row chunks of blocks[{names[0]!r}] ({n} rows); "
                f"got {X.shape[0]} rows in {len(X.chunks[0])} chunks."
            )
            raise InputError(msg)
        if name not in var_names or len(var_names[name]) != X.shape[1]:
            got = len(var_names[name]) if name in var_names else "none"
            msg = f"var_names[{name!r}] must name the {X.shape[1]} columns of blocks[{name!r}], got {got}."
            raise InputError(msg)
    max_cells = check_positive_int(max_cells, name="max_cells", minimum=100)
    use: dict[str, np.ndarray] = {}
    for name, X in zip(names, arrays, strict=True):
        mask = np.ones(X.shape[1], dtype=bool)
        if highly_variable is not None and name in highly_variable:
            mask = np.asarray(highly_variable[name], dtype=bool)
            if mask.shape != (X.shape[1],):
                msg = f"highly_variable[{name!r}] must be a boolean mask of {X.shape[1]} features, got {mask.shape}."
                raise InputError(msg)
        use[name] = mask
    kind_of = {m: (kinds or {}).get(m, "counts" if m == Keys.RNA else "intensity") for m in names}

    # 1. the sample, annotated in memory with the library's own code
    rng = np.random.default_rng(seed)
    sample = np.arange(n) if n <= max_cells else np.sort(rng.choice(n, size=max_cells, replace=False))
    pulled = dask.compute(*[X[sample] for X in arrays])
    values = {m: (sp.csr_matrix(v) if sp.issparse(v) else np.asarray(v)) for m, v in zip(names, pulled, strict=True)}
    smd = _sample_mudata(values, var_names, use, kind_of, [str(i) for i in sample])
    annotate(
        smd,
        markers=markers,
        extend=extend,
        method="cluster",
        weights=weights,
        resolution=resolution,
        n_neighbors=n_neighbors,
        override=override,
        seed=seed,
    )
    record = dict(smd.uns["annotation"])
    params = record["params"]
    types = [str(t) for t in params["types_used"]]
    code_of = {t: i for i, t in enumerate(types)}
    obs = smd.obs
    lab_s = obs[Keys.CLUSTER].astype(str).astype(np.int64).to_numpy()
    s_codes = np.array([code_of.get(str(t), -1) for t in obs[Keys.CELL_TYPE].astype(str)], dtype=np.int64)
    s_over = obs[Keys.OVERRIDDEN].to_numpy(dtype=bool)
    s_conf = obs[Keys.CELL_TYPE_CONFIDENCE].to_numpy(dtype=np.float32)
    sample_out = np.column_stack([lab_s, s_codes, s_conf, s_over]).astype(np.float64)
    ctab = record["clusters"]
    n_clusters = len(ctab["cluster"])
    cluster_codes = np.array([code_of.get(str(t), -1) for t in ctab["cell_type"]], dtype=np.int64)
    cluster_conf = np.clip(np.asarray(ctab["evidence"], dtype=np.float64), 0.0, 1.0)  # rounded: refined below
    for c in range(n_clusters):
        own = (lab_s == c) & ~s_over
        if own.any():  # the exact evidence of the cluster: what its non-overridden cells carry
            cluster_conf[c] = float(s_conf[np.flatnonzero(own)[0]])

    # 2. the assignment, fitted on the sample as the in-memory code fits it; the embedding is the one the
    # in-memory annotation fitted (record['embedding']), applied again to the sample's rows
    if sample.size < n:
        fitted = record["embedding"]["blocks"]
        embeddings = [
            _Embedding.from_record(fitted[name], X.shape[1]) if name in fitted else None
            for name, X in zip(names, arrays, strict=True)
        ]
        parts = [e.apply(values[name]) for name, e in zip(names, embeddings, strict=True) if e is not None]
        Es = np.ascontiguousarray(np.hstack(parts), dtype=np.float32)
        pca = assign_pca(Es)
        if pca is not None:
            Es = np.asarray(pca.transform(Es), dtype=np.float32)
        ref = assign_reference(sample.size)
        nn = exact_neighbors(Es[ref], min(n_neighbors, ref.size), seed=seed)
        ov = _override_model(smd, names, kind_of, values, types, params, weights, markers, extend, seed, cluster_codes)
        if not override:
            ov = None
        assigner = _Assigner(
            n_blocks=len(arrays),
            sample=sample,
            sample_out=sample_out,
            embeddings=embeddings,
            pca=pca,
            nn=nn,
            ref_lab=lab_s[ref],
            cluster_codes=cluster_codes,
            cluster_conf=cluster_conf,
            override=ov,
        )
    else:
        assigner = _Assigner(len(arrays), sample, sample_out, [], None, None, lab_s, cluster_codes, cluster_conf, None)
    # the assigner (a few MB: the reference cells, the sample's result) is one key of the graph, not part of every task
    table = da.map_blocks(
        _assign_chunk,
        *arrays,
        dask.delayed(assigner, pure=True),
        chunks=(arrays[0].chunks[0], (4,)),
        dtype=np.float64,
        meta=np.empty((0, 0), dtype=np.float64),
        name="annotate-chunked",
    )
    logger.info(
        "annotate_chunked: %d of %d cells clustered in memory (%d clusters); the rest assigned in %d chunks",
        sample.size,
        n,
        n_clusters,
        len(arrays[0].chunks[0]),
    )
    out_params = {
        "n_cells": n,
        "max_cells": max_cells,
        "n_sampled": int(sample.size),
        "n_chunks": len(arrays[0].chunks[0]),
        "seed": seed,
        "annotation": record,
    }
    return ChunkedAnnotation(table=table, types=types, sample=sample, sample_mdata=smd, params=out_params)


def _override_model(
    smd: MuData,
    names: list[str],
    kind_of: dict[str, str],
    values: dict[str, Any],
    types: list[str],
    params: dict[str, Any],
    weights: Mapping[str, float] | None,
    markers: Any,
    extend: bool | str,
    seed: int,
    cluster_codes: np.ndarray,
) -> dict[str, Any] | None:
    """The per-cell override of the in-memory code: gates of the intensity markers, tree, types of the clusters."""
    tree_set = load_markers(markers, extend=extend, extra_modalities=list(smd.mod))
    mods = [m for m in smd.mod if m in tree_set.flat().modalities]
    cols, pos, neg = _marker_matrix(smd, tree_set, mods)
    counts_cols = np.array([kind_of[m] == "counts" for m, _ in cols], dtype=bool)
    cluster_types = np.unique(cluster_codes[cluster_codes >= 0])
    if not cols or counts_cols.all() or cluster_types.size == 0:
        return None
    col_names = [f"{smd.mod[m].var_names[j]}" if len(mods) == 1 else f"{m}:{smd.mod[m].var_names[j]}" for m, j in cols]
    uninformative = set(params.get("clustering", {}).get("uninformative_markers", []))
    informative = np.array([c not in uninformative for c in col_names], dtype=bool)
    w_mod = resolve_weights(mods, weights, DEFAULT_WEIGHTS, name="weights")
    tree: TypeTree = _tree(tree_set, types, pos, neg, mods, w_mod, keep=informative & ~counts_cols)
    icols = np.flatnonzero(~counts_cols)
    gates = np.zeros(len(cols), dtype=np.float64)
    columns = []
    for m in dict.fromkeys(cols[i][0] for i in icols):
        mine = np.array([i for i in icols if cols[i][0] == m], dtype=np.int64)
        feats = np.array([cols[i][1] for i in mine], dtype=np.int64)
        X = values[m][:, feats]
        V = np.asarray(X.toarray() if sp.issparse(X) else X, dtype=np.float32)
        gates[mine] = marker_gates(V, seed=seed)  # Otsu per column, as on the sample in memory
        columns.append((names.index(m), feats, mine))
    return {
        "n_cols": len(cols),
        "columns": columns,
        "gates": gates,
        "tree": tree,
        "cluster_types": cluster_types,
    }
