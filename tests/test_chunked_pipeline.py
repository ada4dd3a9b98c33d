"""``run_pipeline`` on zarr stores with ``backend='dask'``: the out-of-core route against the in-memory pipeline.

One synthetic tissue (1,000 cells, 12 planted types, 300 genes, 28 proteins) is written to two zarr stores with
``smo.io.stream_to_zarr`` (400 cells a block) and run twice: in memory (``backend='numpy'`` on the stores read
whole) and out of core on the in-process LocalCluster (``client`` fixture) in row chunks of 500 cells. Measured
(2026-12-07): the same cell type and the same dominant factor for 1,000 of 1,000 cells, co-localization z-scores
equal to the last digit (same graph, same labels), cell loadings within 5.7e-7 x max of the NumPy backend's.
"""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import scipy.sparse as sp

import spatialmultiomics as smo
from spatialmultiomics._errors import InputError

pytest.importorskip("distributed")
zarr = pytest.importorskip("zarr")

N_CELLS = 1000
K = 12


def _write_stores(folder: Path, mdata, order: np.ndarray | None = None, names=("rna", "protein")) -> dict[str, Path]:
    """The modalities of ``mdata`` as zarr stores written by stream_to_zarr (rows in ``order`` when given)."""
    n = mdata.n_obs
    order = np.arange(n) if order is None else order
    ids = np.array([f"cell{i}" for i in range(n)])[order]
    xy = np.asarray(mdata.obsm["spatial"])[order]
    folder.mkdir(parents=True, exist_ok=True)
    pd.DataFrame({"cell_id": ids, "x": xy[:, 0], "y": xy[:, 1]}).to_csv(folder / "cells.csv", index=False)
    out = {}
    for m in names:
        X = mdata[m].X
        X = (X.toarray() if sp.issparse(X) else np.asarray(X))[order]
        table = pd.DataFrame(X, columns=list(mdata[m].var_names))
        table.insert(0, "cell", ids)
        table.to_csv(folder / f"{m}.csv", index=False)
        out[m] = folder / f"{m}.zarr"
        smo.io.stream_to_zarr(folder / f"{m}.csv", out[m], coordinates=folder / "cells.csv", chunk_cells=400)
    return out


@pytest.fixture(scope="module")
def tissue():
    return smo.datasets.synthetic_tissue(N_CELLS, seed=0, n_genes=300)


@pytest.fixture(scope="module")
def stores(tissue, tmp_path_factory):
    return _write_stores(tmp_path_factory.mktemp("stores"), tissue)


@pytest.fixture(scope="module")
def runs(tissue, stores, client, tmp_path_factory):
    """The in-memory run on the stores read whole, and the out-of-core run on the cluster (500-row chunks)."""
    import anndata as ad

    import spatialmultiomics._chunked_pipeline as chunked

    out = tmp_path_factory.mktemp("runs")
    markers = dict(tissue.uns["markers"])
    rna, prot = ad.read_zarr(stores["rna"]), ad.read_zarr(stores["protein"])
    ref = smo.run_pipeline(rna, prot, n_factors=K, markers=markers, output_dir=out / "memory", figures=False)
    rows, chunked.CHUNK_ROWS = chunked.CHUNK_ROWS, 500
    try:
        res = smo.run_pipeline(
            stores["rna"], stores["protein"], n_factors=K, markers=markers, output_dir=out / "ooc", backend="dask"
        )
    finally:
        chunked.CHUNK_ROWS = rows
    return ref, res


def test_cell_types_and_statistics_agree_with_the_in_memory_run(runs):
    ref, res = runs
    mem = pd.read_csv(ref.output_dir / "shared_labels.csv")  # both as written (the text of the same float64)
    ooc = pd.read_csv(res.output_dir / "shared_labels.csv")
    assert ooc["cell_id"].tolist() == mem["cell_id"].tolist()
    np.testing.assert_array_equal(ooc[["x", "y"]].to_numpy(), mem[["x", "y"]].to_numpy())
    # measured 1.000 (the same preprocessed values, all 1,000 cells clustered in memory by the same code); the
    # threshold leaves room for a floating-point tie in the Leiden graph only
    assert np.mean(ooc["cell_type"].to_numpy() == mem["cell_type"].to_numpy()) >= 0.99
    assert np.mean(ooc["nmf_factor"].to_numpy() == mem["nmf_factor"].to_numpy()) >= 0.99
    np.testing.assert_allclose(ooc["confidence"], mem["confidence"], atol=1e-6)
    assert res.cell_types == ref.cell_types
    assert res.type_counts.sum() == N_CELLS
    # co-localization: the tiles add up to the whole graph, so the same statistics for the same labels
    a = ref.co_localization.set_index("cell_type_pair")
    b = res.co_localization.set_index("cell_type_pair")
    assert list(b.index) == list(a.index)
    np.testing.assert_allclose(b["z_score"], a["z_score"], rtol=1e-9, equal_nan=True)
    np.testing.assert_allclose(b["observed"], a["observed"], rtol=0)
    # the factorization: the Dask backend runs the NumPy backend's updates from the same start
    H = np.load(res.output_dir / "H_shared.npy")
    assert H.shape == ref.H_shared.shape == (K, N_CELLS)
    # measured 5.7e-7 x max (H) and 8.2e-7 x max (W_transcript): rounding of the chunked sums
    assert np.max(np.abs(H - ref.H_shared)) <= 1e-4 * ref.H_shared.max()
    np.testing.assert_allclose(res.W_protein, ref.W_protein, atol=1e-4 * ref.W_protein.max())


def test_factors_are_named_as_in_memory(runs):
    """factor_annotation.csv from the loadings, the factor masses and dominant-factor counts (smo.annotate.factor_table).

    Measured (2026-12-07): the same 12 names (10 types, 2 Unknown) and cell counts, scores equal to 1e-6 (the
    file's rounding unit), the seed's rule's scores exactly.
    """
    ref, res = runs
    mem = pd.read_csv(ref.output_dir / "factor_annotation.csv")
    ooc = pd.read_csv(res.output_dir / "factor_annotation.csv")
    pd.testing.assert_frame_equal(ooc, res.factor_annotation.astype(ooc.dtypes.to_dict()), check_dtype=False)
    assert len(ooc) == K
    for col in ("cell_type", "paper_cell_type", "top_genes", "top_proteins"):
        assert ooc[col].tolist() == mem[col].tolist(), col
    np.testing.assert_allclose(ooc["score"], mem["score"], atol=1e-5)
    np.testing.assert_allclose(ooc["paper_score"], mem["paper_score"], atol=1e-5)
    assert ooc["n_cells"].sum() == N_CELLS
    assert np.abs(ooc["n_cells"] - mem["n_cells"]).sum() <= 0.01 * N_CELLS  # the dominant factors agree >= 99 %


def test_report_has_the_in_memory_figures_and_every_cell_in_its_tables(runs):
    """report.html of the out-of-core run: the standard figures drawn from the sample (here every cell: 1,000 <
    200,000), the cells per type of all cells, the factor and co-localization tables."""
    import re

    ref, res = runs
    out = res.output_dir
    text = (out / "report.html").read_text(encoding="utf-8")
    names = ["spatial_cell_types", "factor_loadings", "colocalization", "factor_maps"]
    assert sorted(p.name for p in (out / "figures").iterdir()) == sorted(f"{n}.png" for n in names)
    for name in names:
        assert f'id="fig-{name}"' in text
        assert (out / "figures" / f"{name}.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert text.count("data:image/png;base64,") == len(names)
    for sid in ("summary", "types", "factors", "colocalization", "parameters", "timings"):
        assert f'<section id="{sid}">' in text
    assert f"{N_CELLS:,}" in text and "systematic sample of 1,000 of the 1,000 cells" in text
    assert "NMF iterations (relative error)" in text and "<h3>Factorization</h3>" in text
    # the cells per type: every type with the run's count
    types = text.split('<section id="types">')[1].split("</section>")[0]
    for name, count in res.type_counts.items():
        assert re.search(rf"{re.escape(str(name))}</td><td class=\"num\"[^>]*>{count}<", types), name
    # the co-localization and factor tables have the in-memory report's rows (same types, same factors)
    mem = (ref.output_dir / "report.html").read_text(encoding="utf-8")

    def rows(page: str, anchor: str) -> int:
        return page.split(anchor)[1].split("</table>")[0].count("<tr") - 1

    assert rows(text, 'id="coloc-table"') == rows(mem, 'id="coloc-table"') > 0
    assert rows(text, '<section id="factors">') == rows(mem, '<section id="factors">') == K
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["report"] == {"map_every": 1, "map_cells": N_CELLS}
    assert {"report.html", "figures", "factor_annotation.csv"} <= set(summary["files"])


def test_report_in_headless_chromium(runs, tmp_path, chromium):
    """The out-of-core report runs its script to the end with no console message, every section and figure shown."""
    import re

    _, res = runs
    dom, console = chromium(res.output_dir / "report.html", tmp_path, "#sort=-z_score")
    assert console == []
    assert re.search(r'<body[^>]*data-ready="1"', dom), "the page's script did not run to its end"
    for sid in ("summary", "inputs", "types", "factors", "figures", "colocalization", "parameters", "timings"):
        assert f'<section id="{sid}">' in dom
    assert dom.count('<img alt="') == 4
    table = dom[dom.index('id="coloc-table"') :]
    assert 'aria-sort="descending"' in table[: table.index("</table>")]  # the #sort link sorted it


def test_contract_files_have_the_in_memory_columns(runs):
    ref, res = runs
    mem_dir, out = ref.output_dir, res.output_dir
    written = {p.name for p in out.iterdir()}
    assert written == {
        "shared_labels.csv",
        "co_localization.csv",
        "W_transcript.npy",
        "W_protein.npy",
        "H_shared.npy",
        "factor_annotation.csv",
        "cells.zarr",
        "run_summary.json",
        "report.html",
        "figures",
    }
    for name in ("shared_labels.csv", "co_localization.csv", "factor_annotation.csv"):
        assert list(pd.read_csv(out / name, nrows=2).columns) == list(pd.read_csv(mem_dir / name, nrows=2).columns)
    for name in ("W_transcript.npy", "W_protein.npy"):
        assert np.load(out / name).shape == np.load(mem_dir / name).shape
    cells = zarr.open_group(out / "cells.zarr", mode="r")
    assert cells["W"].shape == (N_CELLS, K)
    np.testing.assert_array_equal(np.asarray(cells["W"][:]).T, np.load(out / "H_shared.npy"))
    types = list(cells.attrs["types"])
    codes = np.asarray(cells["cell_type_code"][:])
    names = np.array([*types, "Unknown"], dtype=object)[np.where(codes >= 0, codes, len(types))]
    assert names.tolist() == pd.read_csv(out / "shared_labels.csv")["cell_type"].tolist()
    summary = json.loads((out / "run_summary.json").read_text())
    assert summary["n_cells"] == N_CELLS and summary["n_factors"] == K
    assert set(summary["timings_s"]) == {"open", "preprocess", "factorize", "annotate", "spatial", "write", "report"}
    assert summary["preprocess"]["protein"]["excluded_channels"] == ["Histone H3"]
    assert sum(summary["cell_types"].values()) == N_CELLS


def test_cells_in_another_order_are_refused_naming_both_stores(tissue, stores, tmp_path):
    order = np.random.default_rng(0).permutation(N_CELLS)
    shuffled = _write_stores(tmp_path / "shuffled", tissue, order=order, names=("protein",))
    with pytest.raises(InputError, match="same cells in the same order") as err:
        smo.run_pipeline(stores["rna"], shuffled["protein"], n_factors=K, output_dir=tmp_path / "o", backend="dask")
    assert str(stores["rna"]) in str(err.value) and str(shuffled["protein"]) in str(err.value)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize("modality", ["rna", "protein"])
def test_values_that_are_not_raw_name_the_store(tissue, client, tmp_path, modality):
    """Scaled (negative) values in a store: one error naming the store, as in memory (it crashed in PCA for RNA)."""
    with warnings.catch_warnings():  # mudata's note on var names shared by the modalities
        warnings.simplefilter("ignore", UserWarning)
        bad = tissue.copy()
        X = bad[modality].X
        X = X.toarray() if sp.issparse(X) else np.asarray(X)
        bad.mod[modality].X = (X - X.mean(axis=0)) / (X.std(axis=0) + 1.0)
    paths = _write_stores(tmp_path / "bad", bad)
    arg = {"rna": "transcript_path", "protein": "protein_path"}[modality]
    with pytest.raises(InputError, match=f"^{arg}=.*{modality}.zarr.*non-negative.*found negative") as err:
        smo.run_pipeline(paths["rna"], paths["protein"], n_factors=K, output_dir=tmp_path / "o", backend="dask")
    assert "\n" not in str(err.value)
    assert not (tmp_path / "o").exists()


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"backend": "numpy"}, "read out of core with backend='dask'"),
        ({"backend": "dask", "pixel_size_um": 0.2}, "must already be in µm"),
        ({"backend": "dask", "protein_path": "TABLE"}, "is not a zarr store"),
        ({"backend": "dask", "output_dir": None}, "output_dir is required"),
        ({"backend": "dask", "annotation_method": "paper"}, "out of core the annotation is 'cluster'"),
    ],
)
def test_bad_inputs_are_input_errors(stores, tmp_path, kwargs, match):
    table = tmp_path / "protein.csv"
    table.write_text("cell,CD3\nc1,1\n")
    args = {"n_factors": K, "output_dir": tmp_path / "o", "protein_path": stores["protein"], **kwargs}
    if args["protein_path"] == "TABLE":
        args["protein_path"] = table
    with pytest.raises(InputError, match=match):
        smo.run_pipeline(stores["rna"], **args)


def _main(argv: list[str], capsys) -> tuple[int, str, str]:
    """The real command line in-process: exit code, stdout, stderr."""
    from spatialmultiomics.cli import main

    try:
        main(argv)
        code = 0
    except SystemExit as exc:
        code = int(exc.code or 0)
    out = capsys.readouterr()
    return code, out.out, out.err


def test_cli_runs_the_stores_and_refuses_bad_ones_with_exit_2(tissue, stores, tmp_path, capsys):
    # a reference of 5 of the 12 planted types: the other cells are 'Unknown' (in memory: the same 232 cells of
    # 1,000 at N = 1,000, the same co-localization table)
    five = dict(list(dict(tissue.uns["markers"]).items())[:5])
    markers = tmp_path / "markers.json"
    markers.write_text(json.dumps(five, default=list))
    args = ["run", "--backend", "dask", "--tx", str(stores["rna"]), "--markers", str(markers)]
    # the defaults (--n-factors auto: k chosen on the annotation's sample, here every cell; in memory: 5)
    code, out, err = _main([*args, "--prot", str(stores["protein"]), "-o", str(tmp_path / "out")], capsys)
    assert code == 0, err
    summary = json.loads((tmp_path / "out" / "run_summary.json").read_text())
    k = summary["preprocess"]["factorize"]["k_selection"]["k"]
    assert summary["n_factors"] == k == 5 and summary["n_factors_requested"] == "auto"
    assert f"{N_CELLS} cells, {k} factors" in out
    labels = pd.read_csv(tmp_path / "out" / "shared_labels.csv")
    unknown = labels["cell_type"] == "Unknown"
    assert 0 < unknown.sum() < N_CELLS and set(labels["cell_type"][~unknown]) <= set(five)
    assert summary["cell_types"]["Unknown"] == unknown.sum()
    pairs = pd.read_csv(tmp_path / "out" / "co_localization.csv")
    called = sorted(set(labels["cell_type"][~unknown]))
    assert len(pairs) == len(called) ** 2 and "Unknown" not in set(pairs["cell_type_a"]) | set(pairs["cell_type_b"])
    code, _, err = _main([*args, "--prot", str(tmp_path / "missing.zarr"), "-o", str(tmp_path / "o2")], capsys)
    assert code == 2 and "is not a zarr store" in err and "Traceback" not in err
    code, out, _ = _main(["run", "--help"], capsys)
    assert code == 0 and "zarr store" in out


def test_fields_of_view_in_the_store_keep_the_graph_apart_as_in_memory(tissue, client, tmp_path):
    """A store with obs['fov'] (two FOVs side by side): no edge crosses the border, as in the in-memory run."""
    import anndata as ad

    import spatialmultiomics._chunked_pipeline as chunked

    markers = dict(tissue.uns["markers"])
    xy = np.asarray(tissue.obsm["spatial"])
    fov = np.where(xy[:, 0] < np.median(xy[:, 0]), "left", "right")
    paths = {}
    for m in ("rna", "protein"):
        a = ad.AnnData(sp.csr_matrix(tissue[m].X), var=pd.DataFrame(index=list(tissue[m].var_names)))
        a.obs_names = [f"cell{i}" for i in range(N_CELLS)]
        a.obs["fov"] = pd.Categorical(fov)
        a.obsm["spatial"] = xy
        paths[m] = tmp_path / f"{m}.zarr"
        with warnings.catch_warnings():  # anndata's own writer: zarr's notices about its next defaults
            warnings.filterwarnings("ignore", message=".*(zarr v2|autosharding)", category=UserWarning)
            a.write_zarr(paths[m])
    rna, prot = ad.read_zarr(paths["rna"]), ad.read_zarr(paths["protein"])
    ref = smo.run_pipeline(rna, prot, n_factors=K, markers=markers, output_dir=tmp_path / "memory", figures=False)
    rows, chunked.CHUNK_ROWS = chunked.CHUNK_ROWS, 500
    try:
        res = smo.run_pipeline(
            paths["rna"], paths["protein"], n_factors=K, markers=markers, output_dir=tmp_path / "ooc", backend="dask"
        )
    finally:
        chunked.CHUNK_ROWS = rows
    mem = pd.read_csv(ref.output_dir / "shared_labels.csv")
    ooc = pd.read_csv(res.output_dir / "shared_labels.csv")
    assert np.mean(ooc["cell_type"].to_numpy() == mem["cell_type"].to_numpy()) >= 0.99
    a = ref.co_localization.set_index("cell_type_pair")
    b = res.co_localization.set_index("cell_type_pair")
    np.testing.assert_allclose(b["observed"], a["observed"], rtol=0)
    # the border matters: with the FOVs ignored, 98 of the 121 observed counts differ (checked when this was written)
    np.testing.assert_allclose(b["z_score"], a["z_score"], rtol=1e-9, equal_nan=True)
