from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest

from spatialmultiomics import InputError, Keys
from spatialmultiomics.align import join_by_id


def _mod(ids: list[str], n_vars: int, seed: int) -> ad.AnnData:
    rng = np.random.default_rng(seed)
    adata = ad.AnnData(rng.random((len(ids), n_vars)).astype(np.float32), obs=pd.DataFrame(index=ids))
    adata.var_names = [f"f{seed}_{j}" for j in range(n_vars)]
    adata.obsm[Keys.SPATIAL] = rng.random((len(ids), 2)) * 100
    return adata


def test_join_keeps_real_ids_and_rows() -> None:
    rna = _mod(["a", "b", "c", "d"], 5, 0)
    prot = _mod(["d", "c", "x", "a"], 3, 1)
    met = _mod(["c", "a", "d", "b"], 2, 2)
    mdata = join_by_id({"rna": rna, "protein": prot, "metabolite": met})
    assert list(mdata.obs_names) == ["a", "c", "d"]
    for name, src in (("rna", rna), ("protein", prot), ("metabolite", met)):
        np.testing.assert_array_equal(mdata[name].X, src[["a", "c", "d"]].X)
    np.testing.assert_array_equal(mdata.obsm[Keys.SPATIAL], rna[["a", "c", "d"]].obsm[Keys.SPATIAL])
    assert mdata.uns["alignment"]["dropped"] == {"rna": 1, "protein": 1, "metabolite": 1}


def test_no_shared_ids() -> None:
    with pytest.raises(
        InputError, match=r"no cell id is shared by all modalities \(rna: \['a', 'b'\]; protein: \['x', 'y'\]\)"
    ):
        join_by_id({"rna": _mod(["a", "b"], 2, 0), "protein": _mod(["x", "y"], 2, 1)})
