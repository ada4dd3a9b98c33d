"""Niche composition per cell and cellular neighbourhoods (k-means of composition vectors).

The composition of cell i is the fraction of each cell type among its graph neighbours: the row-normalised
``A @ O`` (A the 0/1 adjacency, O the one-hot labels), computed as one sparse product. Its most frequent type is
the cell's ``niche_type``; ties go to the lowest category index (the order of ``obs[label_key].cat.categories``),
and cells without a labelled neighbour are marked ``"isolated"``. Cellular neighbourhoods cluster the composition
vectors with k-means (Schürch et al. 2020); isolated cells are not clustered and get the niche ``"isolated"``.

References
----------
Schürch CM et al. (2020). Coordinated cellular neighborhoods orchestrate antitumoral immunity at the colorectal
cancer invasive front. Cell 182:1341-1359.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._validate import check_positive_int
from spatialmultiomics._warnings import SpatialMultiOmicsWarning, warn
from spatialmultiomics.spatial._graph import (
    _binary_graph,
    _edge_blocks,
    _get_graph,
    _get_labels,
    _package_version,
    _small_int,
)

if TYPE_CHECKING:
    import pandas as pd
    import scipy.sparse as sp
    from anndata import AnnData
    from mudata import MuData

__all__ = ["niche_composition", "niche_table", "niches", "write_niche_table"]

ISOLATED = "isolated"
_KMEANS_N_INIT = 4


def _isolated_name(categories: list[str]) -> str:
    """Return the label for cells without neighbours, made distinct from every type name."""
    name = ISOLATED
    while name in categories:
        name = f"_{name}"
    return name


def _neighbour_counts(graph: sp.csr_matrix, codes: np.ndarray, n_types: int, include_self: bool) -> np.ndarray:
    """Dense (n, K) float64 counts of each type among each cell's neighbours (0/1 graph, unlabelled skipped).

    The rows of ``A @ O`` (A the 0/1 adjacency, O the one-hot labels) as one ``bincount`` per block of edges;
    unlabelled neighbours go to an extra bin K that is dropped.
    """
    n = codes.size
    width = n_types + 1
    labels = np.where(codes >= 0, codes, n_types).astype(_small_int(n * width))
    counts = np.zeros((n, width), dtype=np.float64)
    for a, b, start, stop in _edge_blocks(graph.indptr):
        local = np.arange(b - a, dtype=labels.dtype) * width
        key = np.repeat(local, np.diff(graph.indptr[a : b + 1]))
        key += labels[graph.indices[start:stop]]
        counts[a:b] = np.bincount(key, minlength=(b - a) * width).reshape(b - a, width)
    counts = counts[:, :n_types]
    if include_self:
        labelled = np.flatnonzero(codes >= 0)
        counts[labelled, codes[labelled]] += 1.0
    return counts


def _composition_arrays(
    graph: sp.csr_matrix, codes: np.ndarray, n_types: int, include_self: bool
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return (fractions (n, K) float32, n_neighbors (n,) int64, niche type code (n,) int64, -1 = isolated)."""
    counts = _neighbour_counts(graph, codes, n_types, include_self)
    total = counts.sum(axis=1)
    frac = np.zeros(counts.shape, dtype=np.float32)
    has = total > 0
    frac[has] = counts[has] / total[has, None]
    niche = np.where(has, np.argmax(counts, axis=1), -1)  # argmax returns the first maximum: lowest index wins
    return frac, total.astype(np.int64), niche


def niche_composition(
    data: AnnData | MuData,
    *,
    label_key: str = Keys.CELL_TYPE,
    graph_key: str = Keys.GRAPH,
    include_self: bool = False,
    inplace: bool = True,
) -> pd.DataFrame | None:
    """Fraction of each cell type among each cell's spatial neighbours.

    Parameters
    ----------
    data
        AnnData or MuData with categorical labels in ``obs[label_key]`` and a graph in ``obsp[graph_key]``
        (each stored off-diagonal entry is one neighbour; weights are ignored). Neighbours without a label are
        not counted.
    label_key
        Column of ``obs`` with the cell types.
    graph_key
        Key of the adjacency matrix in ``obsp`` (from :func:`spatial_neighbors`); for a directed (kNN) graph the
        neighbours of cell i are row i.
    include_self
        Count the cell itself among its neighbours (the seed's behaviour); off by default.
    inplace
        True: write into ``data`` and return None. False: return the table of :func:`niche_table` without
        changing ``data``.

    Returns
    -------
    None or DataFrame. With ``inplace=True`` writes

    - ``obsm['niche_composition']``: float32 (n_cells, K) fractions; rows sum to 1, or are all 0 for cells
      with no (labelled) neighbour;
    - ``obs['n_neighbors']``: int, number of labelled neighbours counted (plus the cell itself with
      ``include_self``);
    - ``obs['niche_type']``: categorical, the most frequent neighbour type; ties go to the lowest category index;
      ``"isolated"`` for cells with no neighbour;
    - ``uns['niche_composition']``: ``{'categories': [...K names...], 'params': {...}}``.
    """
    import pandas as pd

    codes, categories = _get_labels(data, label_key)
    graph = _binary_graph(_get_graph(data, graph_key))
    frac, n_nb, niche = _composition_arrays(graph, codes, len(categories), bool(include_self))
    isolated = _isolated_name(categories)
    niche_cats = list(categories) + ([isolated] if (niche < 0).any() else [])
    niche_codes = np.where(niche < 0, len(categories), niche)
    niche_type = pd.Categorical.from_codes(niche_codes, categories=niche_cats)
    params = {
        "label_key": label_key,
        "graph_key": graph_key,
        "include_self": bool(include_self),
        "version": _package_version(),
    }
    if not inplace:
        return _table(data.obs_names, niche_type, n_nb, frac, categories)
    data.obsm[Keys.NICHE_COMPOSITION] = frac
    data.obs[Keys.N_NEIGHBORS] = n_nb
    data.obs[Keys.NICHE_TYPE] = pd.Categorical(niche_type, categories=niche_cats)
    data.uns[Keys.NICHE_COMPOSITION] = {"categories": list(categories), "params": params}
    return None


def _stored_composition(
    data: AnnData | MuData, label_key: str, graph_key: str | None = None
) -> tuple[np.ndarray, list[str]] | None:
    """Return (fractions, categories) stored by :func:`niche_composition` for ``label_key``, else None.

    With ``graph_key``, the stored composition must also come from that graph.
    """
    info = data.uns.get(Keys.NICHE_COMPOSITION)
    if not isinstance(info, dict) or Keys.NICHE_COMPOSITION not in data.obsm:
        return None
    params = info.get("params", {})
    if params.get("label_key") != label_key or (graph_key is not None and params.get("graph_key") != graph_key):
        return None
    return np.asarray(data.obsm[Keys.NICHE_COMPOSITION]), [str(c) for c in info["categories"]]


def _n_distinct_rows(values: np.ndarray) -> int:
    """Number of distinct rows of a (n, K) array, from one fixed random projection per row (no n x n object).

    Equal rows always project to the same value; distinct rows colliding would need an exact floating-point
    coincidence.
    """
    weights = np.random.default_rng(0).random(values.shape[1]) + 0.5
    return int(np.unique(values.astype(np.float64) @ weights).size)


def niches(
    data: AnnData | MuData,
    *,
    n_niches: int = 8,
    label_key: str = Keys.CELL_TYPE,
    graph_key: str = Keys.GRAPH,
    seed: int | None = 0,
) -> None:
    """Cellular neighbourhoods: k-means clusters of the niche composition vectors (Schürch et al. 2020).

    Uses ``obsm['niche_composition']`` when :func:`niche_composition` was run with the same ``label_key`` and
    ``graph_key`` (whatever its ``include_self``), and runs it (storing its results) otherwise. Cells with no neighbour are not clustered.

    Parameters
    ----------
    data
        AnnData or MuData with labels in ``obs[label_key]`` and a graph in ``obsp[graph_key]``.
    n_niches
        Number of neighbourhoods (k of k-means). When the composition vectors take fewer distinct values (for
        example with a single cell type), it is lowered to that number with a ``SpatialMultiOmicsWarning``.
    label_key
        Column of ``obs`` with the cell types.
    graph_key
        Key of the adjacency matrix in ``obsp``, used if the composition has to be computed.
    seed
        Seed of k-means (``n_init`` is fixed at 4 restarts).

    Returns
    -------
    None. Writes ``obs['niche']``: categorical with categories ``"0" .. "n_niches-1"`` ordered by decreasing size
    (ties: k-means' order), plus ``"isolated"`` for cells without neighbours; ``uns['niche']``:
    ``{'centroids': (n_niches, K) mean composition of each niche, 'categories': K type names, 'params'}``.
    """
    import pandas as pd
    from sklearn.cluster import KMeans

    n_niches = check_positive_int(n_niches, name="n_niches")
    stored = _stored_composition(data, label_key, graph_key)
    if stored is None:
        niche_composition(data, label_key=label_key, graph_key=graph_key)
        stored = _stored_composition(data, label_key, graph_key)
    frac, categories = stored  # type: ignore[misc]
    has = frac.sum(axis=1) > 0
    n_ok = int(has.sum())
    if n_ok < n_niches:
        msg = f"n_niches={n_niches} is more than the {n_ok} cells with neighbours; choose n_niches <= {n_ok}."
        raise InputError(msg)
    n_distinct = _n_distinct_rows(frac[has])
    if n_distinct < n_niches:
        warn(
            f"niches: only {n_distinct} distinct composition vectors, fewer than n_niches={n_niches}; "
            f"using n_niches={n_distinct}.",
            SpatialMultiOmicsWarning,
        )
        n_niches = n_distinct
    km = KMeans(n_clusters=n_niches, n_init=_KMEANS_N_INIT, random_state=seed).fit(frac[has].astype(np.float64))
    sizes = np.bincount(km.labels_, minlength=n_niches)
    order = np.argsort(-sizes, kind="stable")  # new label r = r-th largest cluster
    rank = np.empty(n_niches, dtype=np.int64)
    rank[order] = np.arange(n_niches)
    isolated = _isolated_name([str(i) for i in range(n_niches)])
    labels = np.full(frac.shape[0], n_niches, dtype=np.int64)
    labels[has] = rank[km.labels_]
    cats = [str(i) for i in range(n_niches)] + ([isolated] if not has.all() else [])
    data.obs[Keys.NICHE] = pd.Categorical.from_codes(labels, categories=cats)
    data.uns[Keys.NICHE] = {
        "centroids": km.cluster_centers_[order].astype(np.float64),
        "categories": list(categories),
        "params": {
            "n_niches": n_niches,
            "label_key": label_key,
            "graph_key": graph_key,
            "seed": seed,
            "n_init": _KMEANS_N_INIT,
            "version": _package_version(),
        },
    }


def _composition_json(frac: np.ndarray, categories: list[str]) -> list[str]:
    """Compact JSON dict of the non-zero fractions (4 decimals) of each row, in category order.

    Vectorised: each distinct ``"name": value`` piece is formatted once, the pieces of all rows are joined into
    one string with a row separator and split again, so there is no Python loop over cells.
    """
    n = frac.shape[0]
    rows, cols = np.nonzero(frac)  # row-major: rows ascending, categories ascending within a row
    values, value_idx = np.unique(np.round(frac[rows, cols].astype(np.float64), 4), return_inverse=True)
    value_str = [repr(float(v)) for v in values]
    pieces = np.array([f"{json.dumps(c)}: {v}" for c in categories for v in value_str], dtype=object)
    piece = pieces[cols * len(value_str) + value_idx.ravel()]
    starts = np.searchsorted(rows, np.arange(n + 1))
    first = np.zeros(rows.size, dtype=bool)
    first[starts[:-1][np.diff(starts) > 0]] = True
    sep = "\n"  # never inside the JSON: json.dumps escapes newlines in names
    tokens = np.empty(rows.size + n, dtype=object)
    tokens[np.arange(rows.size) + rows] = np.where(first, "{", ", ") + piece
    tokens[starts[1:] + np.arange(n)] = np.where(np.diff(starts) > 0, "}" + sep, "{}" + sep)
    return "".join(tokens).split(sep)[:-1]


def _table(
    obs_names: pd.Index,
    niche_type: pd.Categorical,
    n_neighbors: np.ndarray,
    frac: np.ndarray,
    categories: list[str],
    niche: np.ndarray | None = None,
) -> pd.DataFrame:
    """Assemble the niche table from arrays (with a ``niche`` column when ``niche`` is given)."""
    import pandas as pd

    table = pd.DataFrame(
        {
            "cell_id": np.asarray(obs_names, dtype=object),
            "niche_type": np.asarray(niche_type, dtype=object),
            "composition": _composition_json(frac, categories),
            "n_neighbors": np.asarray(n_neighbors, dtype=np.int64),
        }
    )
    if niche is not None:
        table[Keys.NICHE] = niche
    fracs = pd.DataFrame(np.asarray(frac), columns=[f"frac_{c}" for c in categories])
    return pd.concat([table, fracs], axis=1)


def niche_table(data: AnnData | MuData, *, label_key: str = Keys.CELL_TYPE, rows: slice | None = None) -> pd.DataFrame:
    """Return the stored niche composition as one row per cell.

    Parameters
    ----------
    data
        Container on which :func:`niche_composition` was run.
    label_key
        The ``label_key`` it was run with.
    rows
        Only these cells (a slice of the rows, e.g. to write a large table in chunks; default all).

    Returns
    -------
    DataFrame with columns ``cell_id``, ``niche_type``, ``composition`` (compact JSON of the non-zero fractions,
    4 decimals, e.g. ``{"T cell": 0.5, "B cell": 0.5}``), ``n_neighbors``, ``niche`` (the cellular neighbourhood,
    only when :func:`niches` was run) and one ``frac_<type>`` column per type.
    """
    stored = _stored_composition(data, label_key)
    if stored is None or Keys.NICHE_TYPE not in data.obs or Keys.N_NEIGHBORS not in data.obs:
        msg = (
            f"No niche composition for label_key={label_key!r}; "
            f"run smo.spatial.niche_composition(data, label_key={label_key!r}) first."
        )
        raise InputError(msg)
    frac, categories = stored
    part = slice(None) if rows is None else rows
    return _table(
        data.obs_names[part],
        data.obs[Keys.NICHE_TYPE].to_numpy()[part],
        np.asarray(data.obs[Keys.N_NEIGHBORS])[part],
        frac[part],
        categories,
        niche=data.obs[Keys.NICHE].to_numpy()[part] if Keys.NICHE in data.obs else None,
    )


def write_niche_table(
    data: AnnData | MuData, path: Any, *, label_key: str = Keys.CELL_TYPE, chunk_rows: int = 100_000
) -> None:
    """Write :func:`niche_table` to a CSV file ``chunk_rows`` cells at a time (memory O(chunk), not O(cells))."""
    from spatialmultiomics.io._csv import write_csv_parts

    n = data.n_obs
    write_csv_parts(
        (
            niche_table(data, label_key=label_key, rows=slice(start, min(n, start + chunk_rows)))
            for start in range(0, max(n, 1), chunk_rows)
        ),
        path,
    )
