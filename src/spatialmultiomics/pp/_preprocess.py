"""Preprocess every modality of a MuData independently (DESIGN §3.3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics.pp._hvg import highly_variable_genes
from spatialmultiomics.pp._normalize import normalize_counts, scale_intensities

if TYPE_CHECKING:
    from mudata import MuData

__all__ = ["modality_kind", "preprocess"]


def modality_kind(mdata: MuData, name: str) -> str:
    """``'counts'`` for sequencing modalities (RNA), ``'intensity'`` for the rest (proteins, metabolites)."""
    prov = mdata.mod[name].uns.get(Keys.PROVENANCE, {})
    kind = prov.get("kind") if isinstance(prov, Mapping) else None
    if kind in ("counts", "intensity"):
        return kind
    return "counts" if name == Keys.RNA else "intensity"


def preprocess(
    mdata: MuData,
    *,
    rna_normalization: str = "library",
    target_sum: float | None = 1e4,
    n_top_genes: int = 2000,
    protein_transform: str = "arcsinh",
    cofactor: float = 5.0,
    low_percentile: float = 1.0,
    high_percentile: float = 99.0,
) -> None:
    """Normalise each modality on its own and select features; results go to ``layers['preprocessed']``.

    Count modalities (``rna``): library-size normalisation then log1p (or log1p only), then the top
    ``n_top_genes`` highly variable genes in ``var['highly_variable']``. Intensity modalities (``protein`` and
    any other): transform and per-channel robust scaling (:func:`scale_intensities`), every channel kept. The
    balancing of modalities against each other happens in the factorization (``modality_weights``).
    Parameters used are stored in ``mdata.uns['preprocess']``.
    """
    params: dict[str, Any] = {
        "rna_normalization": rna_normalization,
        "target_sum": target_sum,
        "n_top_genes": n_top_genes,
        "protein_transform": protein_transform,
        "cofactor": cofactor,
        "low_percentile": low_percentile,
        "high_percentile": high_percentile,
    }
    for name, adata in mdata.mod.items():
        if modality_kind(mdata, name) == "counts":
            normalize_counts(adata, method=rna_normalization, target_sum=target_sum)
            highly_variable_genes(adata, n_top_genes=n_top_genes)
            logger.info(
                "%s: normalised, %d of %d genes highly variable", name, int(adata.var[Keys.HVG].sum()), adata.n_vars
            )
        else:
            scale_intensities(
                adata,
                transform=protein_transform,
                cofactor=cofactor,
                low_percentile=low_percentile,
                high_percentile=high_percentile,
            )
            logger.info("%s: %d channels transformed and scaled", name, adata.n_vars)
    mdata.uns["preprocess"] = params
