from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import spatial
from spatialmultiomics.cli import main


def _cells(n: int = 800, seed: int = 0) -> pd.DataFrame:
    """Two FOVs in pixels (0.5 µm each); in FOV 'B' tumour cells fill the left half, so tumour-tumour attracts."""
    rng = np.random.default_rng(seed)
    xy = rng.random((n, 2)) * 400.0  # pixels -> 200 µm
    fov = np.where(np.arange(n) < n // 2, "A", "B")
    left = xy[:, 0] < 200
    label = np.where(
        (fov == "B") & left, "tumour", rng.choice(["tumour", "T cell", "macrophage"], n, p=[0.2, 0.5, 0.3])
    )
    return pd.DataFrame(
        {"cell_id": [f"c{i}" for i in range(n)], "X_px": xy[:, 0], "Y_px": xy[:, 1], "core": fov, "phenotype": label}
    )


def _run(args: list[str], cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "spatialmultiomics", "colocalize", *args],
        cwd=cwd,
        capture_output=True,
        text=True,
        timeout=300,
    )


_ARGS = [
    "--label-key",
    "phenotype",
    "--x",
    "X_px",
    "--y",
    "Y_px",
    "--fov-key",
    "core",
    "--pixel-size-um",
    "0.5",
    "--radius",
    "20",
    "--n-niches",
    "3",
]


def test_colocalize_subprocess_writes_every_file_with_the_api_numbers(tmp_path: Path) -> None:
    frame = _cells()
    frame.to_csv(tmp_path / "cells.csv", index=False)
    proc = _run(["cells.csv", *_ARGS, "--output", "out"], tmp_path)
    assert proc.returncode == 0, proc.stderr
    assert "800 cells, 2 FOV(s)" in proc.stdout
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == [
        "co_localization.csv",
        "co_localization_by_fov.csv",
        "niche_composition.csv",
        "result.h5ad",
    ]

    # the same analysis through the API, coordinates converted to µm by hand
    ref = ad.AnnData(
        obs=pd.DataFrame(
            {"phenotype": pd.Categorical(frame["phenotype"]), "fov": frame["core"].to_numpy()},
            index=frame["cell_id"].to_numpy(),
        )
    )
    ref.obsm["spatial"] = frame[["X_px", "Y_px"]].to_numpy() * 0.5
    spatial.spatial_neighbors(ref, radius=20.0)
    spatial.colocalization(ref, label_key="phenotype", sample_key="fov")
    expected = spatial.colocalization_table(ref, label_key="phenotype")

    pooled = pd.read_csv(out / "co_localization.csv")
    assert pooled.columns[:2].tolist() == ["cell_type_pair", "jones_scornecchi_score"]
    np.testing.assert_allclose(pooled["z_score"], expected["z_score"], rtol=1e-9)
    np.testing.assert_array_equal(pooled["observed"], expected["observed"])
    z = pooled.set_index("cell_type_pair")["z_score"]
    assert z["tumour|tumour"] > 5  # the planted segregation

    by_fov = pd.read_csv(out / "co_localization_by_fov.csv")
    assert by_fov.columns[0] == "fov"
    assert by_fov["fov"].unique().tolist() == ["A", "B", "pooled"]
    np.testing.assert_allclose(by_fov.loc[by_fov["fov"] == "pooled", "z_score"].to_numpy(), pooled["z_score"])
    zb = by_fov.set_index(["fov", "cell_type_pair"])["z_score"]
    assert zb[("B", "tumour|tumour")] > 5
    assert abs(zb[("A", "tumour|tumour")]) < 3  # FOV A is randomly mixed

    niche = pd.read_csv(out / "niche_composition.csv")
    assert niche.columns[:5].tolist() == ["cell_id", "niche_type", "composition", "n_neighbors", "niche"]
    assert niche["cell_id"].tolist() == frame["cell_id"].tolist()
    assert niche["niche"].astype(str).isin(["0", "1", "2", "isolated"]).all()

    result = ad.read_h5ad(out / "result.h5ad")
    np.testing.assert_allclose(result.obsm["spatial"], ref.obsm["spatial"])
    assert result.uns["phenotype_nhood_enrichment"]["by_sample"]["samples"].tolist() == ["A", "B"]
    assert "spatial_connectivities" in result.obsp

    # an existing result is not overwritten without --overwrite
    again = _run(["cells.csv", *_ARGS, "--output", "out"], tmp_path)
    assert again.returncode == 2
    assert "exists and is not empty" in again.stderr
    assert "Traceback" not in again.stderr


def _call(args: list[str], capsys) -> tuple[int, str, str]:
    try:
        main(["colocalize", *args])
    except SystemExit as exc:
        captured = capsys.readouterr()
        return exc.code, captured.out, captured.err
    captured = capsys.readouterr()
    return 0, captured.out, captured.err


def test_overwrite_replaces_an_earlier_result(tmp_path: Path, capsys) -> None:
    _cells(n=100).to_csv(tmp_path / "cells.csv", index=False)
    out = tmp_path / "out"
    out.mkdir()
    (out / "old.txt").write_text("old")
    code, _, err = _call([str(tmp_path / "cells.csv"), *_ARGS, "-q", "--output", str(out)], capsys)
    assert code == 2
    assert "exists and is not empty" in err
    code, _, err = _call([str(tmp_path / "cells.csv"), *_ARGS, "-q", "--overwrite", "--output", str(out)], capsys)
    assert code == 0, err
    assert not (out / "old.txt").exists()
    assert (out / "co_localization.csv").exists()


@pytest.mark.parametrize("suffix", [".parquet", ".tsv.gz", ".h5ad"])
def test_colocalize_reads_parquet_tsv_and_h5ad(tmp_path: Path, capsys, suffix: str) -> None:
    frame = _cells(n=200, seed=1)
    path = tmp_path / f"cells{suffix}"
    if suffix == ".parquet":
        frame.to_parquet(path)
    elif suffix == ".tsv.gz":
        frame.to_csv(path, sep="\t", index=False)
    else:
        adata = ad.AnnData(obs=frame.set_index("cell_id").astype({"phenotype": "category", "core": "category"}))
        adata.write_h5ad(path)
    code, _, err = _call([str(path), *_ARGS, "-q", "--output", str(tmp_path / "out")], capsys)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "out" / "co_localization.csv")
    assert len(table) == 9
    assert table["observed"].sum() > 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (["--label-key", "cell_type"], "missing label_key='cell_type'; the columns are ['cell_id', 'X_px'"),
        (["--radius", "0"], "--radius must be a finite number > 0, got 0.0"),
        (["--radius", "-5"], "--radius must be a finite number > 0"),
        (["--x", "nope"], "missing x='nope'"),
        (["--fov-key", "slide"], "missing fov_key='slide'"),
        (["--n-niches", "0"], "--n-niches must be an integer >= 1"),
        (["--pixel-size-um", "0"], "pixel_size_um must be a finite number > 0"),
        # a float column is a measurement, not a label
        (["--label-key", "X_px"], "label_key='X_px' (dtype float64) has 60 distinct values, not all whole numbers"),
    ],
)
def test_bad_arguments_exit_2_with_one_line(tmp_path: Path, capsys, change: list[str], message: str) -> None:
    _cells(n=60).to_csv(tmp_path / "cells.csv", index=False)
    code, _, err = _call([str(tmp_path / "cells.csv"), *_ARGS, *change, "--output", str(tmp_path / "out")], capsys)
    assert code == 2
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("error:")
    assert message in lines[0]
    assert not (tmp_path / "out").exists()


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "the file is empty"),
        ("cell_id,X_px,Y_px,core,phenotype\n", "has no rows"),
        ("cell_id,X_px,Y_px,core,phenotype\na,1,2,A,T\nb,,3,A,T\n", "1 cells have missing or infinite coordinates"),
        ("cell_id,X_px,Y_px,core,phenotype\na,1,2,A,T\nb,x,3,A,T\n", "column 'X_px' has non-numeric values"),
        ("cell_id,X_px,Y_px,core,phenotype\na,1,2,A,\nb,2,3,A,\n", "column 'phenotype' has no value in any row"),
    ],
)
def test_bad_files_exit_2(tmp_path: Path, capsys, content: str, message: str) -> None:
    (tmp_path / "cells.csv").write_text(content)
    code, _, err = _call([str(tmp_path / "cells.csv"), *_ARGS, "--output", str(tmp_path / "out")], capsys)
    assert code == 2
    assert message in err
    assert "Traceback" not in err
    code, _, err = _call([str(tmp_path / "none.csv"), *_ARGS, "--output", str(tmp_path / "out")], capsys)
    assert code == 2
    assert "no such file" in err


def test_one_label_only_gives_nan_statistics_not_a_crash(tmp_path: Path, capsys) -> None:
    frame = _cells(n=120, seed=2).assign(phenotype="tumour")
    frame.to_csv(tmp_path / "cells.csv", index=False)
    with pytest.warns(UserWarning, match="only 1 distinct composition vectors"):
        code, _, err = _call([str(tmp_path / "cells.csv"), *_ARGS, "-q", "--output", str(tmp_path / "out")], capsys)
    assert code == 0, err
    table = pd.read_csv(tmp_path / "out" / "co_localization.csv")
    assert table["cell_type_pair"].tolist() == ["tumour|tumour"]
    assert table["z_score"].isna().all()
    assert table["jones_scornecchi_score"].iloc[0] == pytest.approx(0.0)  # every edge is tumour-tumour, as expected
    by_fov = pd.read_csv(tmp_path / "out" / "co_localization_by_fov.csv")
    assert by_fov["z_score"].isna().all()
    assert len(by_fov) == 3


def test_single_fov_knn_with_permutations(tmp_path: Path, capsys) -> None:
    frame = _cells(n=150, seed=3).drop(columns=["core"]).rename(columns={"X_px": "x", "Y_px": "y"})
    frame.to_csv(tmp_path / "cells.csv", index=False)
    code, _, err = _call(
        [
            str(tmp_path / "cells.csv"),
            "--label-key",
            "phenotype",
            "--method",
            "knn",
            "--n-neighbors",
            "5",
            "--n-perms",
            "50",
            "--n-niches",
            "2",
            "-q",
            "--output",
            str(tmp_path / "out"),
        ],
        capsys,
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "out" / "co_localization.csv")
    assert {"perm_z_score", "perm_p_value"} <= set(table.columns)
    by_fov = pd.read_csv(tmp_path / "out" / "co_localization_by_fov.csv")
    assert by_fov["fov"].unique().tolist() == ["all", "pooled"]
    result = ad.read_h5ad(tmp_path / "out" / "result.h5ad")
    assert result.uns["phenotype_nhood_enrichment"]["directed"]
    assert (result.obsp["spatial_connectivities"].getnnz(axis=1) == 5).all()


def test_exclude_leaves_a_label_out_of_the_pairs_but_not_out_of_the_graph(tmp_path: Path, capsys) -> None:
    frame = _cells(n=300, seed=4)
    frame.loc[frame.index % 5 == 0, "phenotype"] = "Unknown"
    frame.to_csv(tmp_path / "cells.csv", index=False)
    code, _, err = _call(
        [str(tmp_path / "cells.csv"), *_ARGS, "--exclude", "Unknown", "-q", "--output", str(tmp_path / "out")], capsys
    )
    assert code == 0, err
    table = pd.read_csv(tmp_path / "out" / "co_localization.csv")
    assert len(table) == 9
    assert "Unknown" not in set(table["cell_type_a"]) | set(table["cell_type_b"])
    result = ad.read_h5ad(tmp_path / "out" / "result.h5ad")
    full = spatial.colocalization(result, label_key="phenotype", sample_key="fov", inplace=False)
    keep = [full.categories.index(c) for c in ["T cell", "macrophage", "tumour"]]
    expected = full.zscore[np.ix_(keep, keep)].ravel()
    got = table.set_index("cell_type_pair").loc[[f"{a}|{b}" for a in ["T cell", "macrophage", "tumour"] for b in
                                                  ["T cell", "macrophage", "tumour"]], "z_score"]  # fmt: skip
    np.testing.assert_allclose(got.to_numpy(), expected, rtol=1e-9)
    niche = pd.read_csv(tmp_path / "out" / "niche_composition.csv")
    assert "frac_Unknown" in niche.columns  # Unknown cells still occupy space around the others
