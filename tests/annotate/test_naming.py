"""Naming clusters: Otsu gates, cluster positivity and the descent of a lineage hierarchy (annotate._naming)."""

from __future__ import annotations

import numpy as np
import pytest

from spatialmultiomics.annotate._naming import (
    NAME_THRESHOLD,
    TIE_MARGIN,
    TypeTree,
    cluster_positivity,
    descend,
    marker_gates,
    otsu_threshold,
)


def _brute_otsu(x: np.ndarray, bins: int = 256) -> float:
    """Cut of the same histogram maximising w0 * w1 * (mu0 - mu1)^2, by trying every cut."""
    x = np.asarray(x, dtype=np.float64)
    counts, edges = np.histogram(x, bins=bins, range=(x.min(), x.max()))
    centers = 0.5 * (edges[:-1] + edges[1:])
    best, cut = -1.0, None
    for k in range(1, bins):
        c0, c1 = counts[:k], counts[k:]
        w0, w1 = c0.sum(), c1.sum()
        if w0 == 0 or w1 == 0:
            var = 0.0
        else:
            mu0 = (c0 * centers[:k]).sum() / w0
            mu1 = (c1 * centers[k:]).sum() / w1
            var = w0 * w1 * (mu0 - mu1) ** 2
        if var > best:
            best, cut = var, edges[k]
    return float(cut)


# ---------------------------------------------------------------- gates


@pytest.mark.parametrize(("n_low", "n_high", "seed"), [(700, 300, 0), (900, 100, 1), (500, 500, 2)])
def test_otsu_threshold_separates_two_planted_populations(n_low, n_high, seed):
    rng = np.random.default_rng(seed)
    low, high = rng.normal(0.0, 1.0, n_low), rng.normal(8.0, 1.0, n_high)
    x = rng.permutation(np.r_[low, high])
    t = otsu_threshold(x)
    assert low.max() < t < high.min()  # every cell on its own side
    assert t == _brute_otsu(x)


def test_otsu_threshold_edge_cases():
    assert otsu_threshold(np.full(10, 3.5)) == 3.5  # constant: its value
    assert otsu_threshold(np.array([])) == 0.0
    assert otsu_threshold(np.array([np.nan, np.inf])) == 0.0
    x = np.r_[np.zeros(50), np.ones(50), np.nan]
    t = otsu_threshold(x)
    assert 0.0 <= t < 1.0  # NaN ignored, the cut is between 0 and 1
    assert otsu_threshold(x, bins=16) == _brute_otsu(x[np.isfinite(x)], bins=16)


def test_marker_gates_are_per_column():
    rng = np.random.default_rng(3)
    # three columns on different scales, each a negative and a positive population of its own size
    pops = [
        (rng.normal(0, 1, 800), rng.normal(10, 1, 200)),
        (rng.normal(100, 5, 300), rng.normal(200, 5, 700)),
        (rng.normal(-3, 0.1, 500), rng.normal(-1, 0.1, 500)),
    ]
    V = np.column_stack([rng.permutation(np.r_[lo, hi]) for lo, hi in pops])
    gates = marker_gates(V)
    assert gates.shape == (3,)
    np.testing.assert_array_equal(gates, [otsu_threshold(V[:, j]) for j in range(3)])
    for g, (lo, hi) in zip(gates, pops, strict=True):
        assert lo.max() < g < hi.min()
    # subsampled: the gates of the sampled rows, still between the populations
    sub = marker_gates(V, max_cells=400, seed=5)
    rows = np.sort(np.random.default_rng(5).choice(V.shape[0], size=400, replace=False))
    np.testing.assert_array_equal(sub, [otsu_threshold(V[rows, j]) for j in range(3)])
    for g, (lo, hi) in zip(sub, pops, strict=True):
        assert lo.max() < g < hi.min()


def test_cluster_positivity_equals_a_loop():
    rng = np.random.default_rng(4)
    V = rng.normal(size=(300, 5))
    labels = rng.integers(0, 7, 300)
    labels[labels == 3] = 2  # cluster 3 is empty
    gates = rng.normal(0, 0.5, 5)
    P = cluster_positivity(V, labels, gates)
    assert P.shape == (7, 5)
    for c in range(7):
        for j in range(5):
            members = V[labels == c, j]
            expected = np.mean(members > gates[j]) if members.size else 0.0
            assert P[c, j] == pytest.approx(expected, abs=1e-12)


# ---------------------------------------------------------------- hand-built tree

CD45, CD3, CD4, CD8, FOXP3, CD56, PANCK = range(7)


def _immune_tree(*, with_foxp3: bool = True, with_cd45: bool = True) -> TypeTree:
    types = ["Immune", "T", "CD4", "Treg", "NK", "Epithelial"]
    positive = {
        "Immune": [CD45] if with_cd45 else [],
        "T": [CD3],
        "CD4": [CD4],
        "Treg": [FOXP3] if with_foxp3 else [],
        "NK": [CD56],
        "Epithelial": [PANCK],
    }
    negative = {"CD4": [CD8], "NK": [CD3], "Epithelial": [CD45] if with_cd45 else []}
    parent = {"T": "Immune", "CD4": "T", "Treg": "CD4", "NK": "Immune"}
    return TypeTree.build(types, positive, negative, parent)


def _row(*on: int, n: int = 7) -> np.ndarray:
    r = np.zeros(n)
    r[list(on)] = 1.0
    return r


def _names(tree: TypeTree, P: np.ndarray) -> list[str]:
    codes, _ = descend(tree, np.atleast_2d(P))
    return [tree.types[c] if c >= 0 else "Unknown" for c in codes]


def test_tree_structure():
    tree = _immune_tree()
    assert tree.parent.tolist() == [-1, 0, 1, 2, 0, -1]
    assert tree.children(-1).tolist() == [0, 5]
    assert tree.children(0).tolist() == [1, 4]
    assert tree.children(2).tolist() == [3]
    assert tree.children(3).tolist() == []


@pytest.mark.parametrize(
    ("row", "expected"),
    [
        (_row(CD45, CD3, CD4, FOXP3), "Treg"),
        (_row(CD45, CD3, CD4), "CD4"),  # FOXP3 negative: stops at CD4
        (_row(CD45, CD3), "T"),
        (_row(CD45), "Immune"),  # CD45 only: the lineage, nothing finer
        (_row(CD45, CD56), "NK"),
        (_row(CD45, CD3, CD56), "T"),  # CD3 excludes NK
        (_row(CD45, CD3, CD4, CD8), "T"),  # CD8 excludes CD4 T cells
        (_row(PANCK), "Epithelial"),
        (_row(CD45, PANCK), "Immune"),  # CD45 excludes epithelium
        (_row(), "Unknown"),
        (_row(CD3, CD4), "Unknown"),  # CD45-negative: not a T cell, whatever its CD3 (strict gate)
        (_row(CD3, CD4, FOXP3), "Unknown"),
    ],
)
def test_descend_names_hand_made_rows(row, expected):
    assert _names(_immune_tree(), row) == [expected]


def test_panel_without_the_treg_marker_names_the_finest_supported_level():
    tree = _immune_tree(with_foxp3=False)  # FOXP3 not in the panel: Tregs have no column
    assert _names(tree, _row(CD45, CD3, CD4, FOXP3)) == ["CD4"]
    assert _names(_immune_tree(), _row(CD45, CD3, CD4, FOXP3)) == ["Treg"]


def test_unknown_code_and_evidence():
    tree = _immune_tree()
    P = np.vstack([_row(), _row(CD3, CD4), 0.3 * _row(CD45), _row(CD45, CD3, CD4, FOXP3)])
    codes, ev = descend(tree, P)
    assert codes.tolist() == [-1, -1, -1, tree.types.index("Treg")]
    # Unknown rows carry the best root's evidence
    np.testing.assert_allclose(ev, [0.0, 0.0, 0.3, 1.0])


def test_fractional_positivity_uses_the_threshold():
    tree = _immune_tree()
    just = _row(CD45, CD3) * 0.5  # exactly the threshold: qualifies
    below = _row(CD45, CD3) * 0.49
    assert NAME_THRESHOLD == 0.5
    assert _names(tree, np.vstack([just, below])) == ["T", "Unknown"]
    assert _names(tree, _row(CD45, CD3)) == ["T"]
    codes, _ = descend(tree, np.atleast_2d(below), threshold=0.4)
    assert tree.types[codes[0]] == "T"


def test_pass_through_parent_without_markers_in_the_data():
    tree = _immune_tree(with_cd45=False)  # no CD45 channel: Immune is judged by its children
    assert _names(tree, _row(CD3, CD4)) == ["CD4"]
    assert _names(tree, _row(CD3)) == ["T"]
    assert _names(tree, _row(CD56)) == ["NK"]
    assert _names(tree, _row()) == ["Unknown"]
    assert _names(tree, _row(PANCK)) == ["Epithelial"]
    own, _ = tree.own_evidence(np.atleast_2d(_row(CD3)))
    assert own[0, tree.types.index("Immune")] == -np.inf
    ev = tree.propagated(own)
    assert ev[0, tree.types.index("Immune")] == 1.0


def test_any_group_positive_through_one_marker_or_one_child():
    # columns: CD11b, CD33, CD14, CD68, CD3
    types = ["Myeloid", "Macrophage", "Lineage"]
    positive = {"Myeloid": [0, 1, 2], "Macrophage": [3], "Lineage": [0, 1, 2]}
    parent = {"Macrophage": "Myeloid"}
    tree = TypeTree.build(types, positive, {"Myeloid": [4], "Lineage": [4]}, parent, any_of=["Myeloid"])
    one = np.array([[1.0, 0, 0, 0, 0]])
    own, _ = tree.own_evidence(one)
    assert own[0, 0] == 1.0  # any: the best marker
    assert own[0, 2] == pytest.approx(1 / 3)  # all: the mean
    assert _names(tree, one) == ["Myeloid"]
    # no myeloid lineage marker, but a positive subtype: the group is positive through its child
    child = np.array([[0, 0, 0, 1.0, 0]])
    assert _names(tree, child) == ["Macrophage"]
    # the group's negative marker still counts against its own markers
    assert _names(tree, np.array([[1.0, 0, 0, 0, 1.0]])) == ["Unknown"]
    # an 'all' parent is a strict gate: a positive child does not open it
    strict = TypeTree.build(types, positive, None, parent)
    assert _names(strict, child) == ["Unknown"]


def test_negative_markers_use_the_worst_violation():
    # A: positive column 0, negative columns 1 and 2
    tree = TypeTree.build(["A"], {"A": [0]}, {"A": [1, 2]})
    P = np.array([[1.0, 0.3, 0.6], [1.0, 0.3, 0.4], [1.0, 0.0, 0.0]])
    own, total = tree.own_evidence(P)
    np.testing.assert_allclose(own[:, 0], [0.4, 0.6, 1.0])  # 1 - max, not 1 - mean (0.55 in the first row)
    np.testing.assert_allclose(total[:, 0], [0.1, 0.3, 1.0])  # summed evidence: sum of positives - sum of negatives
    codes, _ = descend(tree, P)
    assert codes.tolist() == [-1, 0, 0]


def test_positive_weights_are_normalised():
    tree = TypeTree.build(["A"], {"A": [0, 1]}, positive_weight={"A": [3.0, 1.0]})
    np.testing.assert_allclose(tree.positive_weight[0], [0.75, 0.25])
    own, _ = tree.own_evidence(np.array([[1.0, 0.0], [0.0, 1.0]]))
    np.testing.assert_allclose(own[:, 0], [0.75, 0.25])
    with pytest.raises(ValueError, match="'A'"):
        TypeTree.build(["A"], {"A": [0, 1]}, positive_weight={"A": [1.0]})


def test_tie_margin_prefers_the_type_with_more_summed_evidence():
    # siblings: A on column 0; B on columns 0 and 1 (more specific)
    tree = TypeTree.build(["A", "B"], {"A": [0], "B": [0, 1]})
    assert TIE_MARGIN == 0.05
    near = np.array([[1.0, 0.92]])  # B: 0.96, within 0.05 of A's 1.0; summed 1.92 against 1.0
    far = np.array([[1.0, 0.8]])  # B: 0.9, outside the margin
    assert _names(tree, near) == ["B"]
    assert _names(tree, far) == ["A"]
    codes, ev = descend(tree, near, margin=0.0)
    assert tree.types[codes[0]] == "A" and ev[0] == 1.0
    codes, ev = descend(tree, far, margin=0.2)
    assert tree.types[codes[0]] == "B" and ev[0] == pytest.approx(0.9)


# ---------------------------------------------------------------- property: vectorised == per-row reference


def _reference_descend(tree: TypeTree, P: np.ndarray, threshold: float, margin: float):
    """Per-row descent written from the module notes, recursively (no depth ordering, no vectorisation)."""
    n_types = len(tree.types)
    any_of = tree.any_of if tree.any_of.size else np.zeros(n_types, dtype=bool)
    kids = {t: [c for c in range(n_types) if tree.parent[c] == t] for t in [-1, *range(n_types)]}
    codes, scores = [], []
    for p in P:

        def own(t, p=p):
            pos, neg = tree.positive[t], tree.negative[t]
            if pos.size == 0:
                return -np.inf, -np.inf
            gain = p[pos].max() if any_of[t] else float(p[pos] @ tree.positive_weight[t])
            penalty = p[neg].max() if neg.size else 0.0
            return gain - penalty, p[pos].sum() - (p[neg].sum() if neg.size else 0.0)

        def evidence(t):
            e, s = own(t)
            if tree.positive[t].size == 0 or any_of[t]:  # pass-through or any-group: its best child counts too
                for c in kids[t]:
                    ce, cs = evidence(c)
                    e, s = max(e, ce), max(s, cs)
            return e, s

        node, score = -1, max((evidence(r)[0] for r in kids[-1]), default=-np.inf)
        while kids[node]:
            cand = [(c, *evidence(c)) for c in kids[node]]
            ok = [x for x in cand if x[1] >= threshold]
            if not ok:
                break
            best = max(x[1] for x in ok)
            near = [x for x in ok if x[1] >= best - margin]
            # most summed evidence, then the best evidence, then the first
            pick = max(near, key=lambda x: (x[2], x[1], -x[0]))
            node, score = pick[0], pick[1]
        codes.append(node)
        scores.append(score if np.isfinite(score) else 0.0)
    return np.array(codes), np.array(scores)


def _random_tree(rng: np.random.Generator, n_types: int, n_markers: int) -> TypeTree:
    types = [f"t{i}" for i in range(n_types)]
    parent = {types[i]: (types[int(rng.integers(0, i))] if i and rng.random() < 0.7 else None) for i in range(n_types)}

    def cols(p_empty: float, hi: int) -> list[int]:
        if rng.random() < p_empty:
            return []
        return sorted(rng.choice(n_markers, size=int(rng.integers(1, min(hi, n_markers) + 1)), replace=False).tolist())

    positive = {t: cols(0.2, 3) for t in types}
    negative = {t: cols(0.6, 2) for t in types}
    any_of = [t for t in types if rng.random() < 0.25]
    return TypeTree.build(types, positive, negative, parent, any_of=any_of)


def _random_positivity(rng: np.random.Generator, n_rows: int, n_markers: int) -> np.ndarray:
    P = rng.random((n_rows, n_markers))
    hard = rng.random((n_rows, n_markers)) < 0.5
    return np.where(hard, rng.integers(0, 2, (n_rows, n_markers)).astype(float), P)


@pytest.mark.parametrize("seed", range(40))
def test_vectorised_descend_equals_per_row_reference(seed):
    rng = np.random.default_rng(seed)
    n_markers = int(rng.integers(2, 7))
    tree = _random_tree(rng, int(rng.integers(1, 9)), n_markers)
    P = _random_positivity(rng, 60, n_markers)
    threshold = float(rng.choice([0.3, 0.5, 0.7]))
    margin = float(rng.choice([0.0, 0.05, 0.2]))
    codes, ev = descend(tree, P, threshold=threshold, margin=margin)
    ref_codes, ref_ev = _reference_descend(tree, P, threshold, margin)
    np.testing.assert_array_equal(codes, ref_codes)
    np.testing.assert_allclose(ev, ref_ev, atol=1e-12)
