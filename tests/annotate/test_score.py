import numpy as np
import pytest

from spatialmultiomics._errors import InputError
from spatialmultiomics.annotate import paper_factor_scores
from spatialmultiomics.annotate._score import (
    background_zscore,
    call_types,
    cell_marker_scores,
    factor_marker_enrichment,
    normalised_evidence,
    scale_columns,
    top_features,
)

MARKERS = {
    "T": {"genes": ["CD3E", "CD3D"], "proteins": ["CD3"]},
    "M": {"genes": ["CD68", "CD163"], "proteins": ["CD68"]},
    "E": {"genes": ["EPCAM", "NOT_IN_DATA"], "proteins": ["PanCK"]},
}
GENES = ["CD3E", "CD3D", "CD68", "CD163", "EPCAM", "G1", "G2", "G3"]
PROTEINS = ["CD3", "CD68", "PanCK", "Ki67"]


def _loadings(gene_tops, protein_tops):
    """Loadings (n_features, k) whose top features per factor are the given names, in order."""
    k = len(gene_tops)
    Lg, Lp = np.zeros((len(GENES), k)), np.zeros((len(PROTEINS), k))
    for f, (gs, ps) in enumerate(zip(gene_tops, protein_tops, strict=True)):
        for r, g in enumerate(gs):
            Lg[GENES.index(g), f] = 10.0 - r
        for r, p in enumerate(ps):
            Lp[PROTEINS.index(p), f] = 10.0 - r
    return {"rna": Lg, "protein": Lp}


def test_paper_rule_known_labels_unknown_and_ties():
    L = _loadings(
        gene_tops=[["CD3E", "CD3D"], ["CD68", "G1"], ["G2", "G3"], ["EPCAM", "G1"], ["CD3E", "CD68"]],
        protein_tops=[["CD3"], ["PanCK"], ["Ki67"], ["CD68"], ["Ki67"]],
    )
    res = paper_factor_scores(L, {"rna": GENES, "protein": PROTEINS}, MARKERS, n_top={"rna": 2, "protein": 1})
    assert res.types == ["T", "M", "E"]
    # f0: T genes 2/2, protein 1/1 -> (1 + 1.5) / 2.5 = 1
    # f1: M genes 1/2 -> 0.2 ; E protein 1/1 -> 0.6 -> E
    # f2: nothing -> Unknown
    # f3: E genes 1/1 (NOT_IN_DATA is not counted) -> 0.4 ; M protein -> 0.6 -> M
    # f4: T and M both 1/2 genes -> 0.2 each: tie, first type in marker order wins
    assert res.labels == ["T", "E", "Unknown", "M", "T"]
    np.testing.assert_allclose(res.scores[:, 0], [1.0, 0.0, 0.0, 0.0, 0.2])
    np.testing.assert_allclose(res.scores[:, 1], [0.0, 0.2, 0.0, 0.6, 0.2])
    np.testing.assert_allclose(res.scores[:, 2], [0.0, 0.6, 0.0, 0.4, 0.0])
    np.testing.assert_allclose(res.modality_scores["rna"][3], [0.0, 0.0, 1.0])
    np.testing.assert_allclose(res.best_scores, [1.0, 0.6, 0.0, 0.6, 0.2])
    assert res.top_features["rna"][1] == ["CD68", "G1"]
    assert res.top_features["protein"][3] == ["CD68"]


def test_paper_rule_weights_n_top_and_ignored_modalities():
    L = _loadings(gene_tops=[["CD68", "G1", "CD163"]], protein_tops=[["PanCK"]])
    names = {"rna": GENES, "protein": PROTEINS}
    assert paper_factor_scores(L, names, MARKERS, n_top={"rna": 2, "protein": 1}).labels == ["E"]
    # proteins weighted 0: only genes count
    res = paper_factor_scores(L, names, MARKERS, n_top={"rna": 2, "protein": 1}, weights={"protein": 0})
    assert res.labels == ["M"]
    assert res.scores[0, 1] == pytest.approx(0.5)
    # a third top gene brings CD163 in: M genes 2/2 -> 1/2.5 = 0.4 < E 0.6
    res = paper_factor_scores(L, names, MARKERS, n_top={"rna": 3, "protein": 1})
    assert res.scores[0, 1] == pytest.approx(0.4)
    # a modality without any marker does not change the scores (its weight is not in the denominator)
    L3 = dict(L, metab=np.ones((3, 1)))
    res3 = paper_factor_scores(L3, dict(names, metab=["a", "b", "c"]), MARKERS, n_top={"rna": 2, "protein": 1})
    np.testing.assert_allclose(
        res3.scores, paper_factor_scores(L, names, MARKERS, n_top={"rna": 2, "protein": 1}).scores
    )
    # proteins only: (1.5 * p) / 1.5
    res_p = paper_factor_scores({"protein": L["protein"]}, {"protein": PROTEINS}, MARKERS, n_top={"protein": 1})
    assert res_p.scores[0, 2] == pytest.approx(1.0)


def test_paper_rule_default_n_top_is_10_genes_5_proteins():
    genes = [f"G{i}" for i in range(20)] + ["CD3E", "CD3D"]
    prots = [f"P{i}" for i in range(10)] + ["CD3"]
    Lg = np.zeros((len(genes), 2))
    Lg[:20, :] = np.arange(20, 0, -1)[:, None]  # G0 > G1 > ... > G19
    Lg[20, 0], Lg[21, 0] = 11.5, 10.5  # ranks 10 and 11 in factor 0: CD3E in the top 10, CD3D not
    Lp = np.zeros((len(prots), 2))
    Lp[:10, :] = np.arange(10, 0, -1)[:, None]
    Lp[10, 0] = 6.5  # rank 5 in factor 0
    res = paper_factor_scores({"rna": Lg, "protein": Lp}, {"rna": genes, "protein": prots}, {"T": MARKERS["T"]})
    assert len(res.top_features["rna"][0]) == 10 and len(res.top_features["protein"][0]) == 5
    assert res.scores[0, 0] == pytest.approx((1.0 * 0.5 + 1.5 * 1.0) / 2.5)
    assert res.labels == ["T", "Unknown"]


def test_paper_rule_input_errors():
    L = _loadings([["CD3E"]], [["CD3"]])
    with pytest.raises(InputError, match="share no modality"):
        paper_factor_scores(L, {"atac": ["x"]}, MARKERS)
    with pytest.raises(InputError, match="rows"):
        paper_factor_scores(L, {"rna": GENES[:3], "protein": PROTEINS}, MARKERS)
    with pytest.raises(InputError, match="numbers of factors"):
        paper_factor_scores(
            {"rna": L["rna"], "protein": np.zeros((4, 2))}, {"rna": GENES, "protein": PROTEINS}, MARKERS
        )
    with pytest.raises(InputError, match="n_top"):
        paper_factor_scores(L, {"rna": GENES, "protein": PROTEINS}, MARKERS, n_top={"rna": 0})
    with pytest.raises(InputError, match="weights"):
        paper_factor_scores(L, {"rna": GENES, "protein": PROTEINS}, MARKERS, weights={"rna": -1})


def test_top_features_order_ties_and_non_positive():
    L = np.array([[1.0, 0.0], [3.0, -1.0], [3.0, np.nan], [0.0, 0.0]])
    tops = top_features(L, 3)
    assert tops[0].tolist() == [1, 2, 0]  # tie between rows 1 and 2: lower index first
    assert tops[1].tolist() == []  # nothing positive


def test_factor_marker_enrichment_names_type_factors_not_housekeeping():
    # features: T markers 0-1, M markers 2-3, others 4-9; factor 2 = housekeeping (everything a bit)
    H = np.zeros((3, 10))
    H[0, [0, 1]] = 5.0
    H[1, [2, 3]] = 5.0
    H[2, :] = 1.0
    index = {"T": {"rna": np.array([0, 1])}, "M": {"rna": np.array([2, 3])}}
    E = factor_marker_enrichment({"rna": H.T}, index)
    assert E.shape == (3, 2)
    assert E[0, 0] > 0.4 and E[1, 1] > 0.4
    assert E[0, 1] < 0 and E[1, 0] < 0
    assert E[2].max() < 0.05


def test_scale_columns():
    P = np.column_stack([np.arange(101.0), np.full(101, 3.0), np.r_[np.zeros(100), 10.0]])
    S = scale_columns(P)
    assert S[50, 0] == pytest.approx((50 - 1) / 98, rel=1e-5)
    assert S[:, 0].max() == pytest.approx(100 / 98 - 1 / 98, rel=1e-4)
    assert np.all(S[:, 1] == 0)  # constant column
    assert S[-1, 2] == pytest.approx(1.0)  # percentiles collapse: scaled by the max
    assert scale_columns(np.r_[np.zeros(99), 100.0, 1000.0][:, None], cap=1.5).max() == 1.5
    assert S.dtype == np.float32


def test_cell_marker_scores_weighted_mean():
    profiles = {"rna": np.array([[1.0, 0.0], [0.0, 1.0]]), "protein": np.array([[1.0], [0.0]])}
    cols = {
        "A": {"rna": np.array([0]), "protein": np.array([0])},
        "B": {"rna": np.array([1]), "protein": np.array([], dtype=int)},
    }
    S = cell_marker_scores(profiles, cols)
    np.testing.assert_allclose(S, [[1.0, 0.0], [0.0, 1.0]])
    S = cell_marker_scores({"rna": profiles["rna"], "protein": np.array([[0.0], [1.0]])}, cols)
    np.testing.assert_allclose(S[:, 0], [1.0 / 2.5, 1.5 / 2.5])


def test_normalised_evidence_background_zero_member_one():
    S = np.zeros((100, 2))
    S[:20, 0] = 1.0
    S[20:, 0] = 0.1
    S[20:, 1] = 0.8
    S[:20, 1] = 0.2
    E = normalised_evidence(S, S.argmax(axis=1))
    np.testing.assert_allclose(E[:20, 0], 1.0)
    np.testing.assert_allclose(E[20:, 0], 0.0)
    np.testing.assert_allclose(E[20:, 1], 1.0)


def test_call_types_unknown_and_confidence():
    rng = np.random.default_rng(0)
    n = 300
    S = rng.normal(0.05, 0.01, size=(n, 3)).clip(0)
    S[:100, 0] += 0.8
    S[100:200, 1] += 0.8
    S[200:290, 2] += 0.8
    S[290:295, 0] += 0.1  # weak: closer to the background than to a typical member
    # 295-299: pure background (a type missing from the reference)
    codes, conf, evidence = call_types(S)
    assert evidence.shape == (n, 3)
    assert codes[:100].tolist() == [0] * 100
    assert codes[100:200].tolist() == [1] * 100
    assert np.all(codes[290:] == -1)
    assert conf.dtype == np.float32
    assert np.all((conf >= 0) & (conf <= 1))
    assert conf[:290].mean() > 0.8 and np.all(conf[290:] == 0)
    z = background_zscore(S, S.argmax(axis=1))
    assert z[:290].min() > 10
    codes0, _, _ = call_types(S, unknown_threshold=0)
    assert np.all(codes0 >= 0)
    zero = np.zeros((3, 2))
    assert call_types(zero)[0].tolist() == [-1, -1, -1]


def test_calibrated_confidence_is_a_probability_that_falls_with_the_runner_up():
    from spatialmultiomics.annotate._score import CONFIDENCE_COEF, calibrated_confidence

    e_best = np.array([1.0, 1.0, 1.0, 1.0, 0.5])
    e_run = np.array([0.0, 0.2, 0.5, 0.9, 0.0])
    z = np.array([10.0, 10.0, 10.0, 10.0, 10.0])
    p = calibrated_confidence(e_best, e_run, z)
    assert p.dtype == np.float32
    assert np.all((p > 0) & (p < 1))
    assert np.all(np.diff(p[:4]) < 0)  # a second type with evidence makes the call less certain
    assert p[0] > 0.99
    low_z = calibrated_confidence(np.array([1.0]), np.array([0.0]), np.array([1.5]))
    assert low_z[0] < calibrated_confidence(np.array([1.0]), np.array([0.0]), np.array([4.0]))[0]
    b0, b1, b2, b3 = CONFIDENCE_COEF
    expected = 1 / (1 + np.exp(-(b0 + b1 * 1.0 + b2 * 0.2 + b3 * 10.0)))
    assert p[1] == pytest.approx(expected, rel=1e-5)
    # clipping: evidence beyond 1.5 and z beyond 20 count as 1.5 and 20
    assert calibrated_confidence(np.array([9.0]), np.array([9.0]), np.array([99.0]))[0] == pytest.approx(
        calibrated_confidence(np.array([1.5]), np.array([1.5]), np.array([20.0]))[0]
    )


def test_enrichment_does_not_name_a_type_after_one_noisy_marker():
    # real PBMC case: one pericyte marker (PDGFRB) with a noise loading on a T cell factor, the other four silent
    L = np.zeros((8, 2))
    L[0:3, 0] = 5.0  # T markers on factor 0
    L[3, 0], L[3, 1] = 1.2, 1.4  # PDGFRB: noise on both factors
    L[7, 1] = 3.0  # an unrelated feature carries factor 1
    index = {"T": {"rna": np.array([0, 1, 2])}, "Pericytes": {"rna": np.array([3, 4, 5, 6])}}
    E = factor_marker_enrichment({"rna": L}, index)
    assert E[0, 0] > 0.3
    assert E[0, 1] < 0.1 and E[1, 1] < 0.1
