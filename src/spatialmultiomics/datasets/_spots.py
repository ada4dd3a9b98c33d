"""Visium-like spots over the synthetic tissue: RNA on a spot lattice, protein on single cells, known composition."""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import pandas as pd
import scipy.sparse as sp

from spatialmultiomics._keys import Keys
from spatialmultiomics._validate import check_positive

if TYPE_CHECKING:
    from anndata import AnnData

__all__ = ["SpotData", "hex_lattice", "visium_like"]


@dataclass
class SpotData:
    """Result of :func:`visium_like`.

    Attributes
    ----------
    rna
        Spots (n_spots, n_genes): the summed counts of the cells whose centre lies in each spot, ids
        ``BC00000-1`` ..., ``obsm['spatial']`` the spot centres (µm), provenance ``visium``.
    protein
        The single cells (n_cells, n_proteins) with raw intensities and their coordinates (µm), ids ``cell0`` ...
    composition
        True fraction of each spot's cells of each type (n_spots, n_types), indexed like ``rna``.
    cell_types
        True type of every single cell, indexed like ``protein``.
    markers
        The tissue's marker reference (``{type: {"genes": [...], "proteins": [...]}}``).
    """

    rna: AnnData
    protein: AnnData
    composition: pd.DataFrame
    cell_types: pd.Series
    markers: dict

    def dominant_types(self) -> list[set[str]]:
        """The most frequent true type(s) of each spot: a set, several when the top count is tied."""
        C = self.composition.to_numpy()
        top = C.max(axis=1, keepdims=True)
        names = np.asarray(self.composition.columns)
        return [set(names[row == t[0]].tolist()) for row, t in zip(C, top, strict=True)]


def hex_lattice(side_um: float, spacing_um: float = 100.0) -> np.ndarray:
    """Centres of a hexagonal spot lattice (Visium: 100 µm centre to centre) covering ``[0, side]²``, (n, 2) µm."""
    rows, j = [], 0
    while j * spacing_um * np.sqrt(3) / 2 <= side_um:
        xs = np.arange((j % 2) * spacing_um / 2, side_um + 1e-9, spacing_um)
        rows.append(np.c_[xs, np.full(xs.size, j * spacing_um * np.sqrt(3) / 2)])
        j += 1
    return np.vstack(rows)


def visium_like(
    n_cells: int = 8000,
    seed: int | None = 0,
    *,
    cell_spacing: float = 1.0,
    spot_spacing_um: float = 100.0,
    spot_diameter_um: float = 55.0,
) -> SpotData:
    """Visium-like spots over :func:`synthetic_tissue`: RNA summed over each spot's cells, protein per cell.

    Parameters
    ----------
    n_cells
        Cells of the underlying tissue.
    seed
        Seed of :func:`synthetic_tissue`.
    cell_spacing
        Multiplier of the cells' coordinates (1: ~150 µm² per cell, 1-20 cells per 55 µm spot; 1.6: sparser).
    spot_spacing_um, spot_diameter_um
        Lattice spacing and spot footprint (Visium: 100 and 55 µm).

    Returns
    -------
    :class:`SpotData` (only spots with at least one cell are kept).

    Examples
    --------
    >>> import spatialmultiomics as smo
    >>> data = smo.datasets.visium_like(n_cells=1000, seed=0)
    >>> data.rna.n_obs < data.protein.n_obs, bool(np.allclose(data.composition.sum(axis=1), 1.0))
    (True, True)
    """
    import anndata as ad

    from spatialmultiomics.align._spots import assign_cells_to_spots, spot_weights
    from spatialmultiomics.datasets._tissue import synthetic_tissue

    check_positive(cell_spacing, name="cell_spacing")
    check_positive(spot_spacing_um, name="spot_spacing_um")
    check_positive(spot_diameter_um, name="spot_diameter_um")
    tissue = synthetic_tissue(n_cells=n_cells, seed=seed)
    xy = np.asarray(tissue.obsm[Keys.SPATIAL], dtype=np.float64) * cell_spacing
    spots = hex_lattice(float(xy.max()), spot_spacing_um)
    assign = assign_cells_to_spots(xy, spots, spot_diameter=spot_diameter_um)
    w, n = spot_weights(assign, spots.shape[0], "sum")
    occupied = n > 0
    truth = tissue.obs["true_cell_type"]
    cats = [str(c) for c in truth.cat.categories]
    inside = assign >= 0
    counts = sp.csr_matrix(
        (np.ones(int(inside.sum())), (assign[inside], truth.cat.codes.to_numpy()[inside])),
        shape=(spots.shape[0], len(cats)),
    ).toarray()[occupied]
    ids = [f"BC{i:05d}-1" for i in range(int(occupied.sum()))]
    rna = ad.AnnData(
        sp.csr_matrix(w[occupied] @ tissue["rna"].X, dtype=np.float32),
        obs=pd.DataFrame(index=ids),
        var=tissue["rna"].var.copy(),
    )
    rna.obsm[Keys.SPATIAL] = spots[occupied]
    rna.uns[Keys.PROVENANCE] = {"platform": "visium", "kind": "counts"}
    protein = tissue["protein"].copy()
    protein.obsm[Keys.SPATIAL] = xy
    protein.obs_names = [f"cell{i}" for i in range(protein.n_obs)]
    composition = pd.DataFrame(counts / counts.sum(axis=1, keepdims=True), index=ids, columns=cats)
    cell_types = pd.Series(truth.astype(str).to_numpy(), index=protein.obs_names, name="true_cell_type")
    return SpotData(rna, protein, composition, cell_types, dict(tissue.uns["markers"]))
