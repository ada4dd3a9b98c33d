"""Preprocess every modality of a MuData independently (DESIGN §3.3)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys
from spatialmultiomics._log import logger
from spatialmultiomics._validate import check_option, check_positive
from spatialmultiomics.pp._channels import NON_MARKER_CHANNELS, check_exclude_channels, non_marker_channels
from spatialmultiomics.pp._hvg import highly_variable_genes
from spatialmultiomics.pp._normalize import normalize_counts, scale_intensities
from spatialmultiomics.pp._transforms import PROTEIN_TRANSFORMS

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
    protein_transform: str = "auto",
    cofactor: float = 5.0,
    low_percentile: float = 1.0,
    high_percentile: float = 99.0,
    exclude_channels: Sequence[str] | None = NON_MARKER_CHANNELS,
) -> None:
    """Normalise each modality on its own and select features; results go to ``layers['preprocessed']``.

    Count modalities (``rna``): library-size normalisation then log1p (or log1p only), then the top
    ``n_top_genes`` highly variable genes in ``var['highly_variable']``. Intensity modalities (``protein`` and
    any other): transform and per-channel robust scaling (:func:`scale_intensities`) of every channel, the
    transform chosen per modality by default (``protein_transform='auto'``: CLR for antibody-derived counts,
    arcsinh with cofactor 5 for mass-cytometry ion counts and for fluorescence and other intensities; the
    per-channel background cofactor is ``protein_transform='arcsinh_background'``); the channels that carry no
    cell-type information (DNA / nuclear stains such as DAPI, Hoechst, DNA1, Ir191 or histone H3, and
    background / empty / blank channels; see ``exclude_channels``) are flagged False in
    ``var['highly_variable']``, so :func:`smo.factorize.joint_nmf` leaves them out (zero loadings) while they
    stay in ``X`` and in the layer. The balancing of modalities against each other happens in the factorization
    (``modality_weights``). Parameters used, and the channels left out per modality, are stored in
    ``mdata.uns['preprocess']`` (``'excluded_channels'``), with the transform used per intensity modality and why
    (``'intensity_transforms'``: ``{modality: {'transform': ..., 'reason': ...}}``; the per-channel cofactors are in
    each modality's ``var['arcsinh_cofactor']``, the full record in its ``uns['intensity_transform']``).

    Parameters
    ----------
    mdata
        MuData with raw counts / intensities in each modality's ``X``.
    rna_normalization, target_sum
        See :func:`normalize_counts`.
    n_top_genes
        Highly variable genes kept per count modality (all when fewer).
    protein_transform
        ``'auto'`` (default: per modality from its platform and values), ``'arcsinh'``,
        ``'arcsinh_background'``, ``'clr'``, ``'log1p'`` or ``'none'``; see ``transform`` of
        :func:`scale_intensities`.
    cofactor, low_percentile, high_percentile
        See :func:`scale_intensities` (``cofactor`` applies to ``protein_transform='arcsinh'`` and to the
        intensities of ``'auto'``).
    exclude_channels
        Channels of intensity modalities left out of the factorization: case-insensitive channel names or
        regular expressions matched against the whole name. Default
        :data:`~spatialmultiomics.pp.NON_MARKER_CHANNELS`; None (or an empty list) uses every channel; a list
        of your own replaces the default (add to it with ``[*smo.pp.NON_MARKER_CHANNELS, "CD45RO"]``).

    Raises
    ------
    InputError
        When ``exclude_channels`` would leave an intensity modality with no channel, or for an unknown
        ``protein_transform`` (before anything changes).
    """
    patterns = check_exclude_channels(exclude_channels)
    protein_transform = check_option(protein_transform, PROTEIN_TRANSFORMS, name="protein_transform")
    check_positive(cofactor, name="cofactor")
    transforms: dict[str, dict[str, str]] = {}
    excluded: dict[str, list[str]] = {}
    params: dict[str, Any] = {
        "rna_normalization": rna_normalization,
        "target_sum": target_sum,
        "n_top_genes": n_top_genes,
        "protein_transform": protein_transform,
        "cofactor": cofactor,
        "low_percentile": low_percentile,
        "high_percentile": high_percentile,
        "exclude_channels": "smo.pp.NON_MARKER_CHANNELS" if patterns == NON_MARKER_CHANNELS else list(patterns),
    }
    drops = {}  # intensity modality -> channels left out of the factorization; checked before anything changes
    for name, adata in mdata.mod.items():
        if modality_kind(mdata, name) == "counts":
            continue
        drops[name] = non_marker_channels(adata.var_names, patterns=patterns)
        if drops[name].all():
            msg = (
                f"modality {name!r}: every channel ({list(adata.var_names[:10])}) matches exclude_channels "
                "(DNA / nuclear or background channels); pass exclude_channels=None to factorize them anyway."
            )
            raise InputError(msg)
    for name, adata in mdata.mod.items():
        if modality_kind(mdata, name) == "counts":
            normalize_counts(adata, method=rna_normalization, target_sum=target_sum)
            highly_variable_genes(adata, n_top_genes=n_top_genes)
            logger.info(
                "%s: normalised, %d of %d genes highly variable", name, int(adata.var[Keys.HVG].sum()), adata.n_vars
            )
        else:
            status = f"{name}_status"  # the alignment's imputed rows are means of cells: decide on measured ones
            imputed = (
                mdata.obs[status].astype(str).to_numpy() == "imputed"
                if status in mdata.obs.columns and len(mdata.obs) == adata.n_obs
                else None
            )
            scale_intensities(
                adata,
                transform=protein_transform,
                cofactor=cofactor,
                low_percentile=low_percentile,
                high_percentile=high_percentile,
                decide_on=~imputed if imputed is not None and imputed.any() and not imputed.all() else None,
            )
            record = adata.uns[Keys.INTENSITY_TRANSFORM]
            transforms[name] = {"transform": str(record["transform"]), "reason": str(record["reason"])}
            drop = drops[name]
            adata.var[Keys.HVG] = ~drop
            excluded[name] = [str(v) for v in adata.var_names[drop]]
            logger.info(
                "%s: %d channels transformed (%s) and scaled, %d used for the factorization%s",
                name,
                adata.n_vars,
                record["reason"],
                int((~drop).sum()),
                f" (left out: {excluded[name]})" if drop.any() else "",
            )
    params["excluded_channels"] = excluded
    params["intensity_transforms"] = transforms
    mdata.uns["preprocess"] = params
