import numpy as np
import pandas as pd
import pytest

from spatialmultiomics._errors import InputError
from spatialmultiomics._mudata import read_h5mu, write_h5mu
from spatialmultiomics.annotate import AnnotationResult, annotate
from spatialmultiomics.datasets import paper_benchmark, synthetic_tissue
from spatialmultiomics.datasets._paper import PAPER_MARKERS


def _perfect_factors(mdata, seed=0):
    """W = one-hot true type; H puts each type's markers on its own factor (plus low noise elsewhere)."""
    rng = np.random.default_rng(seed)
    codes = mdata.obs["true_cell_type"].cat.codes.to_numpy()
    types = list(mdata.obs["true_cell_type"].cat.categories)
    mdata.obsm["X_nmf"] = np.eye(len(types))[codes].astype(np.float32)
    for mod, key in (("rna", "genes"), ("protein", "proteins")):
        names = list(mdata[mod].var_names)
        L = rng.uniform(0, 0.5, size=(len(names), len(types)))
        for t, name in enumerate(types):
            for m in PAPER_MARKERS[name][key]:
                L[names.index(m), t] = 5.0
        mdata[mod].varm["nmf_loadings"] = L.astype(np.float32)
    return codes, types


@pytest.fixture
def bench():
    mdata = paper_benchmark(seed=0)
    _perfect_factors(mdata)
    return mdata


def test_paper_method_on_perfect_factors_is_exact(bench):
    annotate(bench, markers=dict(bench.uns["markers"]), method="paper")
    truth = bench.obs["true_cell_type"].astype(str)
    assert (bench.obs["cell_type"].astype(str) == truth).all()
    assert isinstance(bench.obs["cell_type"].dtype, pd.CategoricalDtype)
    np.testing.assert_allclose(bench.obs["cell_type_confidence"], 1.0)
    np.testing.assert_array_equal(bench.obs["nmf_factor"], bench.obs["true_cell_type"].cat.codes)
    table = bench.uns["annotation"]
    assert table["cell_type"] == list(PAPER_MARKERS)
    assert table["factor"] == [0, 1, 2, 3]
    np.testing.assert_allclose(table["score"], 1.0)
    assert table["top_genes"][0].split(", ")[:4] == ["CD3E", "CD3D", "CD2", "TRAC"]
    assert table["top_proteins"][2].split(", ")[:2] == ["PanCK", "E-cadherin"]
    assert table["n_cells"] == [50, 50, 50, 50]
    assert table["params"]["method"] == "paper"


def test_auto_method_on_perfect_factors(bench):
    res = annotate(bench, markers=dict(bench.uns["markers"]), method="auto", inplace=False)
    assert isinstance(res, AnnotationResult)
    assert "cell_type" not in bench.obs  # inplace=False leaves the container alone
    truth = bench.obs["true_cell_type"].astype(str).to_numpy()
    assert np.mean(res.cell_type.astype(str).to_numpy() == truth) >= 0.98
    assert res.factor_table["cell_type"].tolist() == list(PAPER_MARKERS)
    assert list(res.cell_scores.columns) == list(PAPER_MARKERS)
    assert res.cell_type.index.equals(bench.obs_names)
    assert res.confidence.dtype == np.float32
    assert np.all((res.confidence >= 0) & (res.confidence <= 1))


def test_slots_nested_under_nmf_and_roundtrip(bench, tmp_path):
    bench.uns["nmf"] = {"n_iter": 5}
    annotate(bench, markers=dict(bench.uns["markers"]), method="auto")
    ann = bench.uns["nmf"]["annotation"]
    assert {"factor", "cell_type", "score", "paper_cell_type", "top_genes", "top_proteins", "params"} <= set(ann)
    assert "annotation" not in bench.uns
    assert ann["params"]["markers"] == "markers"
    write_h5mu(bench, tmp_path / "a.h5mu")
    back = read_h5mu(tmp_path / "a.h5mu")
    assert back.obs["cell_type"].tolist() == bench.obs["cell_type"].tolist()
    assert list(back.uns["nmf"]["annotation"]["cell_type"]) == ann["cell_type"]


def test_types_missing_from_the_reference_become_unknown(bench):
    markers = {t: v for t, v in PAPER_MARKERS.items() if t != "Fibroblasts"}
    res = annotate(bench, markers=markers, method="auto", inplace=False)
    truth = bench.obs["true_cell_type"].astype(str).to_numpy()
    calls = res.cell_type.astype(str).to_numpy()
    assert np.mean(calls[truth == "Fibroblasts"] == "Unknown") >= 0.9
    assert np.mean(calls[truth != "Fibroblasts"] == "Unknown") <= 0.03
    assert res.factor_table["cell_type"].tolist()[3] == "Unknown"  # the fibroblast factor stays unnamed
    assert np.all(res.confidence[calls == "Unknown"] == 0)
    # the seed's rule labels all of them with whatever its fibroblast factor is named after (Unknown only when
    # no other type's marker happens to be among the factor's top features)
    paper = annotate(bench, markers=markers, method="paper", inplace=False)
    label = paper.factor_table["cell_type"].tolist()[3]
    assert set(paper.cell_type.astype(str)[truth == "Fibroblasts"]) == {label}


def test_markers_method_needs_no_factors():
    mdata = paper_benchmark(seed=1)
    res = annotate(mdata, markers=dict(mdata.uns["markers"]), method="markers", inplace=False)
    truth = mdata.obs["true_cell_type"].astype(str).to_numpy()
    assert np.mean(res.cell_type.astype(str).to_numpy() == truth) >= 0.98
    assert np.all(res.factor == -1)
    with pytest.raises(InputError, match="joint_nmf"):
        annotate(mdata, markers=dict(mdata.uns["markers"]), method="paper")


def test_builtin_reference_names_the_benchmark(bench):
    res = annotate(bench, method="auto", inplace=False)  # markers=None: the built-in immune_tme reference
    truth = bench.obs["true_cell_type"].astype(str).to_numpy()
    calls = res.cell_type.astype(str).to_numpy()
    for true, called in (("Macrophages", "Macrophages"), ("Epithelial", "Epithelial"), ("Fibroblasts", "Fibroblasts")):
        assert np.mean(calls[truth == true] == called) >= 0.9
    assert np.mean(np.isin(calls[truth == "T cells"], ["CD4 T cells", "CD8 T cells", "Tregs"])) >= 0.9
    assert "Mast cells" in res.params["types_dropped"]  # no mast-cell marker in this panel


def test_paper_benchmark_pipeline_accuracy():
    from spatialmultiomics import pp
    from spatialmultiomics.factorize import joint_nmf

    mdata = paper_benchmark(seed=0)
    pp.preprocess(mdata)
    joint_nmf(mdata, n_components=4, seed=0)
    truth = mdata.obs["true_cell_type"].astype(str).to_numpy()
    for method in ("paper", "auto"):
        res = annotate(mdata, markers=dict(mdata.uns["markers"]), method=method, inplace=False)
        assert np.mean(res.cell_type.astype(str).to_numpy() == truth) >= 0.98, method


def test_tissue_auto_finds_every_type_and_confidence_is_informative():
    from sklearn.metrics import f1_score

    from spatialmultiomics import pp
    from spatialmultiomics.factorize import joint_nmf

    mdata = synthetic_tissue(2000, seed=0)
    pp.preprocess(mdata)
    joint_nmf(mdata, n_components=12, seed=0)
    truth = mdata.obs["true_cell_type"].astype(str).to_numpy()
    types = list(mdata.obs["true_cell_type"].cat.categories)
    res = annotate(mdata, markers=dict(mdata.uns["markers"]), method="auto", inplace=False)
    calls = res.cell_type.astype(str).to_numpy()
    assert set(types) <= set(calls)
    f1 = f1_score(truth, calls, labels=types, average="macro", zero_division=0)
    assert f1 >= 0.9
    # the confidence is calibrated (logistic fit on other seeds and sizes, see _score.CONFIDENCE_COEF): among
    # called cells its mean matches the fraction correct, and it separates right from wrong calls
    called = calls != "Unknown"
    correct = (calls == truth)[called]
    conf = res.confidence[called]
    assert abs(conf.mean() - correct.mean()) <= 0.02
    assert correct[conf >= 0.9].mean() >= 0.99
    assert correct[conf < 0.6].mean() <= 0.8
    assert np.all(res.confidence[~called] == 0)
    paper = annotate(mdata, markers=dict(mdata.uns["markers"]), method="paper", inplace=False)
    assert f1 >= f1_score(truth, paper.cell_type.astype(str), labels=types, average="macro", zero_division=0)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"method": "vote"}, "method must be one of"),
        ({"unknown_threshold": -1}, "unknown_threshold"),
        ({"markers": {"X": {"genes": ["NOPE1"], "proteins": ["NOPE2"]}}}, "no marker"),
        ({"markers": {"X": {"metabolites": ["glucose"]}}}, "unknown modality key"),
        ({"n_top": {"rna": 0}}, "n_top"),
        ({"weights": {"protein": -2}}, "weights"),
    ],
)
def test_argument_errors(bench, kwargs, match):
    kwargs.setdefault("markers", dict(bench.uns["markers"]))
    with pytest.raises(InputError, match=match):
        annotate(bench, **{"method": "auto", **kwargs})


def test_slot_errors(bench):
    markers = dict(bench.uns["markers"])
    bench["rna"].varm["nmf_loadings"] = np.ones((500, 3))
    with pytest.raises(InputError, match="nmf_loadings"):
        annotate(bench, markers=markers)
    bench.obsm["X_nmf"] = -np.ones((200, 4))
    with pytest.raises(InputError, match="non-negative"):
        annotate(bench, markers=markers)
    del bench.obsm["X_nmf"]
    with pytest.raises(InputError, match="X_nmf"):
        annotate(bench, markers=markers, method="auto")
    # the clustering method needs the preprocessed values, not the factors, and says so
    with pytest.raises(InputError, match=r"layers\['preprocessed'\].*smo.pp.preprocess"):
        annotate(bench, markers=markers, method="cluster")


def test_low_k_rare_types_keep_their_protein_evidence(bench):
    # k = 6 < 12 types: most rare types have no factor of their own. Averaging the protein markers with their
    # reconstruction (denoise='all') can smear them over neighbouring types; the default ('auto') keeps observed
    # intensities unless every type is named by a factor. This case is one where 'all' is clearly worse.
    from sklearn.metrics import f1_score

    from spatialmultiomics import pp
    from spatialmultiomics.factorize import joint_nmf

    mdata = synthetic_tissue(2000, seed=2)
    pp.preprocess(mdata)
    joint_nmf(mdata, n_components=6, seed=0)
    truth = mdata.obs["true_cell_type"].astype(str).to_numpy()
    rare = ["Tregs", "Plasma cells", "NK cells", "Dendritic cells", "Neutrophils"]
    f1, calls = {}, {}
    for denoise in ("auto", "counts", "all"):
        res = annotate(mdata, markers=dict(mdata.uns["markers"]), method="auto", denoise=denoise, inplace=False)
        assert res.params["denoise"] == denoise
        calls[denoise] = res.cell_type.astype(str).to_numpy()
        f1[denoise] = f1_score(truth, calls[denoise], labels=rare, average=None, zero_division=0)
    assert np.array_equal(calls["auto"], calls["counts"])  # 6 factors cannot name 12 types
    assert f1["auto"].min() >= 0.85
    assert f1["all"].min() < f1["auto"].min() - 0.05
    # every type named (perfect factors of the paper benchmark): 'auto' denoises the proteins too
    full = {
        d: annotate(bench, markers=dict(bench.uns["markers"]), method="auto", denoise=d, inplace=False)
        for d in ("auto", "all")
    }
    assert np.array_equal(full["auto"].cell_scores.to_numpy(), full["all"].cell_scores.to_numpy())


def test_extend_adds_user_types_to_the_builtin_reference(bench):
    mine = {"Melanocytes": {"genes": ["PMEL", "MLANA"], "proteins": ["SOX10"]}}
    res = annotate(bench, markers=mine, extend=True, method="auto", inplace=False)
    assert res.params["markers"] == "immune_tme+markers"
    assert "Melanocytes" in res.params["types_dropped"]  # not in this panel
    truth = bench.obs["true_cell_type"].astype(str).to_numpy()
    calls = res.cell_type.astype(str).to_numpy()
    assert np.mean(calls[truth == "Epithelial"] == "Epithelial") >= 0.9
    with pytest.raises(InputError, match="denoise must be one of"):
        annotate(bench, markers=mine, denoise="some")


@pytest.mark.parametrize("method", ["paper", "auto", "cluster"])
def test_factor_table_from_the_factors_alone_is_annotates(bench, method):
    """What the out-of-core pipeline writes as factor_annotation.csv: the table of annotate without the cells."""
    from spatialmultiomics.annotate import factor_table

    markers = None if method == "cluster" else PAPER_MARKERS
    if method == "cluster":
        from spatialmultiomics import pp

        pp.preprocess(bench)
    res = annotate(bench, markers=markers, method=method, inplace=False)
    W = np.asarray(bench.obsm["X_nmf"], dtype=np.float64)
    loadings = {m: bench[m].varm["nmf_loadings"] for m in ("rna", "protein")}
    names = {m: list(bench[m].var_names) for m in bench.mod}
    dom = res.factor[res.factor >= 0]
    table = factor_table(loadings, names, W.sum(axis=0), np.bincount(dom, minlength=W.shape[1]), markers, method=method)
    pd.testing.assert_frame_equal(table, res.factor_table)
    if method != "cluster":  # perfect factors: factor t is type t (the built-in reference names other types)
        assert table["cell_type"].tolist() == list(bench.obs["true_cell_type"].cat.categories)
    with pytest.raises(InputError, match="n_cells must hold one count per factor"):
        factor_table(loadings, names, W.sum(axis=0), np.zeros(2), markers)
    with pytest.raises(InputError, match=r"loadings\['rna'\] must be"):
        factor_table({"rna": loadings["rna"][:5]}, names, W.sum(axis=0), np.zeros(W.shape[1]), markers)
