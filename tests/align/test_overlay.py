from __future__ import annotations

import anndata as ad
import numpy as np
import pandas as pd
import pytest
from matplotlib.figure import Figure

from spatialmultiomics import InputError, Keys
from spatialmultiomics.align import Transform, align
from spatialmultiomics.pl import alignment_overlay


def _mods(jittered_grid):
    rng = np.random.default_rng(0)
    xy = jittered_grid(900, rng)
    truth = Transform.from_params(rotation_deg=30.0, translation=(500.0, 200.0), center=xy.mean(axis=0))
    mods = {}
    for name, pts in (("rna", xy), ("protein", truth.apply(xy + rng.uniform(-1, 1, xy.shape)))):
        adata = ad.AnnData(
            rng.random((900, 3)).astype(np.float32), obs=pd.DataFrame(index=[f"{name}{i}" for i in range(900)])
        )
        adata.obsm[Keys.SPATIAL] = pts
        mods[name] = adata
    return mods


def _offsets(ax) -> list[np.ndarray]:
    return [np.asarray(c.get_offsets()) for c in ax.collections]


def test_overlay_before_and_after(jittered_grid) -> None:
    mods = _mods(jittered_grid)
    mdata = align(mods)
    fig = alignment_overlay(mdata)
    assert isinstance(fig, Figure)
    before, after = fig.axes[:2]
    assert (before.get_title(), after.get_title()) == ("before alignment", "after alignment")
    rna_b, prot_b = _offsets(before)
    rna_a, prot_a = _offsets(after)
    # before: the protein cells sit in their own frame, far from the RNA cells; after: on top of them
    assert np.abs(prot_b.mean(axis=0) - rna_b.mean(axis=0)).max() > 100
    assert np.sqrt(((prot_a - rna_a) ** 2).sum(axis=1)).mean() < 2.0
    assert "protein: register, residual" in fig.get_suptitle()
    labels = [t.get_text() for t in before.get_legend().get_texts()]
    assert labels == ["rna (reference)", "protein (rigid)"]
    # the raw dict plus the stored record gives the same 'after' picture for the whole protein cloud
    fig2 = alignment_overlay(mods, alignment=mdata.uns["alignment"], max_points=300)
    raw_after = _offsets(fig2.axes[1])[1]
    assert raw_after.shape[0] == 300
    t = Transform.from_dict(mdata.uns["alignment"]["modalities"]["protein"]["transform"])
    np.testing.assert_allclose(raw_after, t.apply(mods["protein"].obsm[Keys.SPATIAL][::3]))


def test_overlay_errors(jittered_grid) -> None:
    mods = _mods(jittered_grid)
    with pytest.raises(InputError, match=r"no alignment record: pass alignment=mdata.uns\['alignment'\]"):
        alignment_overlay(mods)
    with pytest.raises(InputError, match=r"modalities \['atac'\] are not in the data"):
        alignment_overlay(mods, alignment={"modalities": {}}, modalities=["atac"])
    with pytest.raises(InputError, match="data must be an aligned MuData or a dict"):
        alignment_overlay([1, 2])
