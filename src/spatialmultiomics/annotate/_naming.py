"""Name clusters of cells the way an immunologist gates: marker positivity, negative markers, a lineage hierarchy.

Pure array functions (no AnnData).

Gates
    Every marker column gets a positivity threshold from its own distribution over the cells: Otsu's threshold
    (the cut that maximises the between-class variance of the two sides; Otsu 1979, IEEE Trans SMC 9, 62), the
    automatic counterpart of a manual gate. A cell is positive for the marker above it.
Evidence
    For a cluster and a type: the mean, over the type's own markers found in the panel, of the fraction of the
    cluster's cells positive for the marker, minus the largest such fraction among the type's negative markers (a
    type must lack every one of them). 1 = every cell of the cluster carries every marker, 0 = none (or as many
    carry a negative marker).
Hierarchy
    Types may have a parent (``T cells`` under ``Immune cells``, ``Tregs`` under ``CD4 T cells``). A type is
    reached only through its parent, as in a gating hierarchy: a cluster negative for CD45 is not called a T cell
    whatever its CD3. A type whose markers the panel lacks is passed through (its evidence is that of its best
    child). A cluster descends from the roots: at each level it takes
    the child with the highest evidence among those at least ``threshold`` (0.5: the majority of the cluster's
    cells is positive), and stops where no child qualifies. So a panel without FOXP3 names ``CD4 T cells``, one
    with CD45 but no lineage markers ``Immune cells``; a cluster no root qualifies for is ``Unknown``. Among
    siblings within ``0.05`` of the best, the one with more evidence summed over its markers wins (the more
    specific type: Tregs over CD4 T cells on a FOXP3+ CD4+ cluster of a flat reference).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np

from spatialmultiomics._sparse import one_hot

__all__ = [
    "NAME_THRESHOLD",
    "TypeTree",
    "cluster_positivity",
    "descend",
    "marker_gates",
    "otsu_threshold",
]

#: evidence a type needs to be chosen (majority of the cluster's cells positive for its markers)
NAME_THRESHOLD = 0.5
#: siblings within this much of the best evidence are compared by their summed evidence (specificity)
TIE_MARGIN = 0.05


def otsu_threshold(x: np.ndarray, *, bins: int = 256) -> float:
    """Otsu's threshold of a 1-D sample: the cut maximising the between-class variance (histogram of ``bins``).

    Returns the upper edge of the best lower class; the maximum of ``x`` when ``x`` is constant.

    Examples
    --------
    >>> import numpy as np
    >>> x = np.r_[np.zeros(90), np.ones(10)]
    >>> 0.0 <= otsu_threshold(x) < 1.0
    True
    """
    x = np.asarray(x, dtype=np.float64)
    x = x[np.isfinite(x)]
    if x.size == 0:
        return 0.0
    lo, hi = float(x.min()), float(x.max())
    if hi <= lo:
        return hi
    counts, edges = np.histogram(x, bins=bins, range=(lo, hi))
    centers = 0.5 * (edges[:-1] + edges[1:])
    w0 = np.cumsum(counts, dtype=np.float64)
    w1 = w0[-1] - w0
    s0 = np.cumsum(counts * centers)
    m0 = np.divide(s0, w0, out=np.zeros_like(s0), where=w0 > 0)
    m1 = np.divide(s0[-1] - s0, w1, out=np.zeros_like(s0), where=w1 > 0)
    between = w0 * w1 * (m0 - m1) ** 2
    return float(edges[int(np.argmax(between[:-1])) + 1])


def marker_gates(V: np.ndarray, *, max_cells: int = 200_000, seed: int = 0) -> np.ndarray:
    """Otsu threshold of every column of ``V`` (n_cells, n_markers), from at most ``max_cells`` sampled rows."""
    V = np.asarray(V)
    if V.shape[0] > max_cells:
        rows = np.sort(np.random.default_rng(seed).choice(V.shape[0], size=max_cells, replace=False))
        V = V[rows]
    return np.array([otsu_threshold(V[:, j]) for j in range(V.shape[1])], dtype=np.float64)


def cluster_positivity(V: np.ndarray, labels: np.ndarray, gates: np.ndarray) -> np.ndarray:
    """Fraction of each cluster's cells above each marker's gate, shape (n_clusters, n_markers)."""
    labels = np.asarray(labels, dtype=np.int64)
    n_clusters = int(labels.max()) + 1 if labels.size else 0
    pos = (np.asarray(V) > np.asarray(gates)[None, :]).astype(np.float32)
    sums = np.asarray(one_hot(labels, n_clusters, np.float32).T @ pos, dtype=np.float64)
    sizes = np.bincount(labels, minlength=n_clusters).astype(np.float64)
    return sums / np.maximum(sizes, 1.0)[:, None]


@dataclass(frozen=True)
class TypeTree:
    """Types with their marker columns and parents, as used for naming.

    Attributes
    ----------
    types
        Type names.
    positive, negative
        Per type, column indices (into the marker matrix) of its own positive and negative markers found in the
        data.
    positive_weight, negative_weight
        Per type, the weight of each of those columns in the type's evidence (summing to 1 per type; equal
        weights by default, or modality weights spread over each modality's markers).
    parent
        Per type, the index of its parent type, -1 for roots.
    any_of
        Per type, True for the lineage groups positive when any one of their markers is.
    """

    types: list[str]
    positive: list[np.ndarray]
    negative: list[np.ndarray]
    parent: np.ndarray
    positive_weight: list[np.ndarray] = field(default_factory=list)
    negative_weight: list[np.ndarray] = field(default_factory=list)
    any_of: np.ndarray = field(default_factory=lambda: np.zeros(0, dtype=bool))

    @classmethod
    def build(
        cls,
        types: Sequence[str],
        positive: Mapping[str, Sequence[int]],
        negative: Mapping[str, Sequence[int]] | None = None,
        parent: Mapping[str, str | None] | None = None,
        *,
        positive_weight: Mapping[str, Sequence[float]] | None = None,
        negative_weight: Mapping[str, Sequence[float]] | None = None,
        any_of: Sequence[str] = (),
    ) -> TypeTree:
        """Build from ``{type: columns}`` maps and ``{type: parent name}`` (parents must be among ``types``)."""
        types = list(types)
        pos = [np.asarray(positive.get(t, ()), dtype=np.int64) for t in types]
        neg = [np.asarray((negative or {}).get(t, ()), dtype=np.int64) for t in types]

        def weights(cols: list[np.ndarray], given: Mapping[str, Sequence[float]] | None) -> list[np.ndarray]:
            out = []
            for t, c in zip(types, cols, strict=True):
                w = np.ones(c.size) if given is None or t not in given else np.asarray(given[t], dtype=np.float64)
                if w.shape != c.shape:
                    msg = f"weights of type {t!r} have shape {w.shape}, its columns {c.shape}."
                    raise ValueError(msg)
                out.append(w / w.sum() if w.sum() > 0 else w)
            return out

        par = np.array(
            [types.index(p) if (p := (parent or {}).get(t)) is not None and p in types else -1 for t in types],
            dtype=np.int64,
        )
        return cls(
            types=types,
            positive=pos,
            negative=neg,
            parent=par,
            positive_weight=weights(pos, positive_weight),
            negative_weight=weights(neg, negative_weight),
            any_of=np.array([t in set(any_of) for t in types], dtype=bool),
        )

    def children(self, node: int) -> np.ndarray:
        """Indices of the direct children of ``node`` (-1: the roots)."""
        return np.flatnonzero(self.parent == node)

    def own_evidence(self, P: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Own evidence (n_rows, n_types) and summed evidence of each type's markers, from positivity ``P``.

        Types without positive markers in the data get ``-inf`` (no evidence of their own).
        """
        P = np.asarray(P, dtype=np.float64)
        n = P.shape[0]
        own = np.full((n, len(self.types)), -np.inf)
        total = np.zeros((n, len(self.types)))
        any_of = self.any_of if self.any_of.size else np.zeros(len(self.types), dtype=bool)
        for t in range(len(self.types)):
            pos, neg = self.positive[t], self.negative[t]
            if pos.size == 0:
                continue
            # a type must lack every one of its negative markers: the worst violation counts
            penalty = P[:, neg].max(axis=1) if neg.size else 0.0
            gain = P[:, pos].max(axis=1) if any_of[t] else P[:, pos] @ self.positive_weight[t]
            own[:, t] = gain - penalty
            total[:, t] = P[:, pos].sum(axis=1) - (P[:, neg].sum(axis=1) if neg.size else 0.0)
        return own, total

    def propagated_total(self, total: np.ndarray) -> np.ndarray:
        """Summed evidence with pass-through types taking their best child's (as :meth:`propagated`)."""
        return self.propagated(np.where(np.array([p.size > 0 for p in self.positive])[None, :], total, -np.inf))

    def propagated(self, own: np.ndarray) -> np.ndarray:
        """Evidence of each type: its own, or that of its best child where it has no markers in the data or is an
        ``any``-group."""
        ev = own.copy()
        any_of = self.any_of if self.any_of.size else np.zeros(len(self.types), dtype=bool)
        depth = np.array([self._depth(t) for t in range(len(self.types))])
        for t in np.argsort(-depth, kind="stable"):
            p = self.parent[t]
            if p >= 0 and (self.positive[p].size == 0 or any_of[p]):
                ev[:, p] = np.maximum(ev[:, p], ev[:, t])
        return ev

    def _depth(self, t: int) -> int:
        d = 0
        while self.parent[t] >= 0 and d <= len(self.types):
            t = int(self.parent[t])
            d += 1
        return d


def descend(
    tree: TypeTree,
    P: np.ndarray,
    *,
    threshold: float = NAME_THRESHOLD,
    margin: float = TIE_MARGIN,
    return_evidence: bool = False,
) -> tuple[np.ndarray, ...]:
    """Name each row of a positivity matrix by descending the type tree (see the module notes).

    Parameters
    ----------
    tree
        The reference as a :class:`TypeTree`.
    P
        Marker positivity (n_rows, n_markers) in [0, 1]: fractions of positive cells per cluster, or 0/1 per cell.
    threshold
        Evidence a type needs.
    margin
        Siblings within this of the best are compared by summed evidence.
    return_evidence
        Also return the evidence of every type (:meth:`TypeTree.propagated`, n_rows x n_types; ``-inf`` where a
        type has no marker in the data), computed on the way.

    Returns
    -------
    ``(codes, evidence)``: type index per row (-1 = Unknown) and the evidence of the type chosen (the best root's
    evidence for Unknown rows); with ``return_evidence``, the per-type evidence as a third item.
    """
    own, total = tree.own_evidence(P)
    ev = tree.propagated(own)
    total = tree.propagated_total(total)
    n = ev.shape[0]
    codes = np.full(n, -1, dtype=np.int64)
    roots = tree.children(-1)
    score = ev[:, roots].max(axis=1) if roots.size else np.full(n, -np.inf)
    node = np.full(n, -1, dtype=np.int64)
    active = np.ones(n, dtype=bool)
    for _ in range(len(tree.types) + 1):  # at most one level per type
        if not active.any():
            break
        for parent_node in np.unique(node[active]):
            rows = np.flatnonzero(active & (node == parent_node))
            ch = tree.children(int(parent_node))
            if ch.size == 0:
                active[rows] = False
                continue
            e = ev[np.ix_(rows, ch)]
            ok = e >= threshold
            stop = ~ok.any(axis=1)
            active[rows[stop]] = False
            go = rows[~stop]
            if go.size == 0:
                continue
            e, ok = e[~stop], ok[~stop]
            best = np.where(ok, e, -np.inf).max(axis=1)
            near = ok & (e >= best[:, None] - margin)
            tot = np.where(near, total[np.ix_(go, ch)], -np.inf)
            # among the near-best, the most specific (summed evidence), then the best evidence, then the first
            key = np.where(near, tot + 1e-9 * e, -np.inf)
            pick = ch[np.argmax(key, axis=1)]
            node[go] = pick
            codes[go] = pick
            score[go] = ev[go, pick]
    score = np.where(np.isfinite(score), score, 0.0)
    return (codes, score, ev) if return_evidence else (codes, score)
