"""Xenium: no small real bundle is available, so the tests write files in the documented XOA layouts.

Layouts (10x "Xenium Onboard Analysis output files" documentation):
- ``cell_feature_matrix.h5``: 10x HDF5 v3 (``matrix/{data,indices,indptr,shape,barcodes}``, ``matrix/features/
  {id,name,feature_type,genome}``); MEX folder ``cell_feature_matrix/`` with the same content.
- ``cells.csv.gz`` (XOA 1.x) / ``cells.parquet``: cell_id, x_centroid, y_centroid, transcript_counts,
  control_probe_counts, control_codeword_counts, [unassigned_codeword_counts, deprecated_codeword_counts],
  total_counts, cell_area, nucleus_area, [segmentation_method (XOA >= 2.0)]. XOA 1.0-1.2 cell ids are integers,
  later ones strings such as ``aaabinlp-1`` (bytes in some parquet files).
- ``experiment.xenium``: JSON with ``analysis_sw_version`` and ``pixel_size``.
"""

from __future__ import annotations

import json
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.io import read, xenium, xenium_mudata

GENES = ["ACTA2", "CD3E", "EPCAM", "PTPRC"]


def _bundle(folder: Path, tenx, version: str, *, mex: bool = False, protein: bool = False, n: int = 6) -> dict:
    rng = np.random.default_rng(7)
    folder.mkdir(parents=True)
    if version.startswith("1.0"):
        ids = [str(i) for i in range(1, n + 1)]
        ctrl = [
            ("NegControlProbe_00042", "Negative Control Probe"),
            ("NegControlCodeword_0500", "Negative Control Codeword"),
            ("BLANK_0006", "Blank Codeword"),
        ]
    else:
        ids = [f"aaa{chr(97 + i)}binl-1" for i in range(n)]
        ctrl = [
            ("NegControlProbe_00042", "Negative Control Probe"),
            ("UnassignedCodeword_0001", "Unassigned Codeword"),
            ("DeprecatedCodeword_0002", "Deprecated Codeword"),
        ]
        if version.startswith(("3", "4")):
            ctrl.append(("Intergenic_Region_1", "Genomic Control"))
    names = [*GENES, *(c for c, _ in ctrl)]
    types = ["Gene Expression"] * len(GENES) + [t for _, t in ctrl]
    if protein:
        names += ["CD45", "PanCK"]
        types += ["Protein Expression"] * 2
    X = rng.poisson(2.0, size=(n, len(names)))
    if mex:
        tenx.mex(folder / "cell_feature_matrix", X, ids, [f"ENSG{i:05d}" for i in range(len(names))], names, types)
    else:
        tenx.h5(
            folder / "cell_feature_matrix.h5",
            X,
            ids,
            [f"ENSG{i:05d}" for i in range(len(names))],
            names,
            types,
            software_version=f"xenium-{version}",
        )
    cells = pd.DataFrame(
        {
            "cell_id": ids,
            "x_centroid": rng.uniform(0, 2000, n),
            "y_centroid": rng.uniform(0, 2000, n),
            "transcript_counts": X[:, : len(GENES)].sum(1),
            "control_probe_counts": X[:, len(GENES)],
            "control_codeword_counts": X[:, len(GENES) + 1],
            "total_counts": X.sum(1),
            "cell_area": rng.uniform(20, 200, n),
            "nucleus_area": rng.uniform(5, 50, n),
        }
    )
    if version.startswith("1.0"):
        cells["cell_id"] = np.arange(1, n + 1)
        cells.to_csv(folder / "cells.csv.gz", index=False)
    else:
        cells["segmentation_method"] = "Segmented by nucleus expansion of 5.0µm"
        table = pa.Table.from_pandas(cells.iloc[::-1].reset_index(drop=True), preserve_index=False)
        table = table.set_column(0, "cell_id", pa.array([i.encode() for i in cells["cell_id"][::-1]], pa.binary()))
        pq.write_table(table, folder / "cells.parquet")
    (folder / "experiment.xenium").write_text(
        json.dumps({"analysis_sw_version": f"xenium-{version}", "pixel_size": 0.2125, "panel_name": "test panel"})
    )
    return {"X": X, "ids": ids, "names": names, "types": types, "cells": cells, "ctrl": ctrl}


@pytest.mark.parametrize(("version", "mex"), [("1.0.2", False), ("1.5.0", True), ("2.0.1", False), ("3.1.0", False)])
def test_xoa_versions_read_back_exactly(tmp_path: Path, tenx, version: str, mex: bool) -> None:
    truth = _bundle(tmp_path / "out", tenx, version, mex=mex)
    adata = xenium(tmp_path / "out")
    assert list(adata.obs_names) == truth["ids"]
    assert list(adata.var_names) == GENES
    X = truth["X"]
    np.testing.assert_array_equal(adata.X.toarray(), X[:, : len(GENES)])
    cell = truth["ids"][3]
    assert adata[cell, "EPCAM"].X.toarray()[0, 0] == X[3, GENES.index("EPCAM")]
    cells = truth["cells"].assign(cell_id=truth["ids"]).set_index("cell_id")
    np.testing.assert_allclose(
        adata.obsm[Keys.SPATIAL], cells.loc[truth["ids"], ["x_centroid", "y_centroid"]].to_numpy()
    )
    np.testing.assert_allclose(adata.obs["cell_area"].to_numpy(), cells.loc[truth["ids"], "cell_area"].to_numpy())
    # controls kept apart, with their types
    ctrl_names = [c for c, _ in truth["ctrl"]]
    assert adata.uns["control_features"]["name"] == ctrl_names
    assert adata.uns["control_features"]["feature_type"] == [t for _, t in truth["ctrl"]]
    np.testing.assert_array_equal(
        adata.obsm["control_counts"].toarray(), X[:, len(GENES) : len(GENES) + len(ctrl_names)]
    )
    prov = adata.uns[Keys.PROVENANCE]
    assert prov["version"] == f"xenium-{version}"
    assert prov["experiment_pixel_size"] == 0.2125
    assert prov["cells_file"] == ("cells.csv.gz" if version.startswith("1.0") else "cells.parquet")
    # the dispatcher finds the same; the result stores as .h5ad
    again = read(tmp_path / "out")
    np.testing.assert_array_equal(again.X.toarray(), adata.X.toarray())
    adata.write_h5ad(tmp_path / "x.h5ad")
    back = ad.read_h5ad(tmp_path / "x.h5ad")
    np.testing.assert_array_equal(back.obsm["control_counts"].toarray(), adata.obsm["control_counts"].toarray())
    assert list(back.uns["control_features"]["name"]) == ctrl_names


def test_protein_features_become_their_own_modality(tmp_path: Path, tenx) -> None:
    truth = _bundle(tmp_path / "out", tenx, "4.0.0", protein=True)
    mdata = xenium_mudata(tmp_path / "out")
    assert set(mdata.mod) == {"rna", "protein"}
    prot = mdata["protein"]
    assert list(prot.var_names) == ["CD45", "PanCK"]
    np.testing.assert_array_equal(prot.X, truth["X"][:, -2:])
    assert list(prot.obs_names) == list(mdata["rna"].obs_names) == truth["ids"]
    np.testing.assert_allclose(mdata.obsm[Keys.SPATIAL], prot.obsm[Keys.SPATIAL])
    assert "Genomic Control" in mdata["rna"].uns["control_features"]["feature_type"]
    assert "PanCK" not in mdata["rna"].var_names and "CD45" not in mdata["rna"].uns["control_features"]["name"]
    assert xenium(tmp_path / "out", modality="protein").n_vars == 2
    from spatialmultiomics._mudata import read_h5mu, write_h5mu

    write_h5mu(mdata, tmp_path / "x.h5mu")
    np.testing.assert_array_equal(read_h5mu(tmp_path / "x.h5mu")["protein"].X, prot.X)
    with pytest.raises(InputError, match=r"no protein features \(feature types in the matrix"):
        _bundle(tmp_path / "rna_only", tenx, "2.0.1")
        xenium(tmp_path / "rna_only", modality="protein")


def test_bad_xenium_inputs(tmp_path: Path, tenx) -> None:
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "transcripts.parquet").write_bytes(b"")
    with pytest.raises(
        InputError,
        match=r"not a complete Xenium output; missing 2 file\(s\): cell_feature_matrix.h5 or cell_feature_matrix; cells.parquet or cells.csv.gz or cells.csv",
    ) as info:
        read(empty)
    assert "\n" not in str(info.value)
    truth = _bundle(tmp_path / "out", tenx, "1.0.2")
    cells = truth["cells"]
    cells.rename(columns={"x_centroid": "x_centriod"}).to_csv(tmp_path / "out" / "cells.csv.gz", index=False)
    with pytest.raises(
        InputError, match=r"lacks column\(s\) x \('x_centroid'\); .*did you mean 'x_centriod' for 'x_centroid'"
    ):
        xenium(tmp_path / "out")
    cells.iloc[1:].to_csv(tmp_path / "out" / "cells.csv.gz", index=False)
    with pytest.raises(InputError, match=r"1 of the matrix's 6 cells are not in the cells table \(e.g. '1'\)"):
        xenium(tmp_path / "out")
    cells.assign(x_centroid=cells["x_centroid"].where(cells.index != 2, np.nan)).to_csv(
        tmp_path / "out" / "cells.csv.gz", index=False
    )
    with pytest.raises(InputError, match=r"1 cells have missing or infinite x_centroid / y_centroid"):
        xenium(tmp_path / "out")
    (tmp_path / "out" / "cells.csv.gz").write_bytes(b"\x1f\x8b broken gzip")
    with pytest.raises(InputError, match=r"cells.csv.gz: cannot be (read|parsed)"):
        xenium(tmp_path / "out")
