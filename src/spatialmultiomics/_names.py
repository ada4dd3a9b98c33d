"""Names of markers and features: canonical spelling, alias groups of protein channels and gene symbols, variants.

Shared by :mod:`spatialmultiomics.annotate` (marker references) and :mod:`spatialmultiomics.align` (linked features
between modalities), so that neither stage imports the other.
"""

from __future__ import annotations

import re

__all__ = ["ALIASES", "GROUP_OF", "canonical_name", "feature_name_variants"]

#: groups of names for the same marker (protein channel names and gene symbols); matching treats a group as one
ALIASES: tuple[tuple[str, ...], ...] = (
    ("PanCK", "Pan-CK", "Pan-Keratin", "pan-cytokeratin", "Cytokeratin", "KRT", "Keratin", "CK", "AE1/AE3"),
    ("aSMA", "SMA", "alpha-SMA", "αSMA", "α-SMA", "ACTA2", "alpha smooth muscle actin"),
    ("CD3", "CD3e", "CD3epsilon", "CD3ε"),
    ("E-cadherin", "ECAD", "E-Cad", "CDH1"),
    # the isoforms stand in for pan-CD45 only on panels without a CD45 channel (full names are matched first)
    ("CD45", "PTPRC", "LCA", "CD45RO", "CD45RA", "CD45RB"),
    ("HLA-DR", "HLA-DRA", "MHC-II", "MHC class II"),
    ("Ki67", "Ki-67", "MKI67"),
    ("CD20", "MS4A1"),
    ("CD8", "CD8a", "CD8alpha"),
    ("CD11c", "ITGAX"),
    ("CD11b", "ITGAM"),
    ("CD16", "FCGR3A"),
    ("CD56", "NCAM1", "NCAM"),
    ("CD31", "PECAM1", "PECAM"),
    ("Vimentin", "VIM"),
    ("EpCAM", "CD326"),
    ("CD138", "SDC1", "Syndecan-1"),
    ("CD66b", "CEACAM8"),
    ("Granzyme B", "GZMB", "GrB"),
    ("PD-1", "PDCD1", "CD279"),
    ("PD-L1", "CD274", "B7-H1"),
    ("CD25", "IL2RA"),
    ("CD123", "IL3RA"),
    ("CD303", "CLEC4C", "BDCA2", "BDCA-2"),
    ("Tryptase", "TPSAB1", "Mast cell tryptase"),
    ("CD117", "KIT", "c-Kit"),
    ("CD15", "FUT4"),
    ("CD57", "B3GAT1"),
    ("CD21", "CR2"),
    ("Podoplanin", "PDPN", "D2-40"),
    ("Desmin", "DES"),
    ("CD206", "MRC1"),
    ("CD209", "DC-SIGN"),
    ("TIM-3", "HAVCR2"),
    ("LAG-3", "LAG3"),
    ("TCF1", "TCF-1", "TCF7"),
    ("Collagen I", "COL1A1", "Collagen1"),
    ("Collagen IV", "COL4A1"),
    ("beta-catenin", "β-catenin", "CTNNB1"),
    ("CD141", "THBD", "BDCA3", "BDCA-3"),
    ("CD79a", "CD79A"),
    ("FOXP3", "FoxP3"),
    ("MPO", "Myeloperoxidase"),
    ("LYVE1", "LYVE-1"),
    ("PDGFRB", "PDGFR-beta", "PDGFRβ", "CD140b"),
    ("Histone H3", "HistoneH3", "H3"),
    ("MUC1", "CD227"),
    ("CK8", "Cytokeratin 8", "KRT8"),
    ("CK18", "Cytokeratin 18", "KRT18"),
    ("CK19", "Cytokeratin 19", "KRT19"),
    ("CK5", "Cytokeratin 5", "KRT5"),
    ("CK7", "Cytokeratin 7", "KRT7"),
    ("CD103", "ITGAE"),
    ("CD39", "ENTPD1"),
    ("IDO1", "IDO"),
    ("CD73", "NT5E"),
    ("Arginase-1", "ARG1"),
    ("CD64", "FCGR1A"),
    ("NKp46", "NCR1", "CD335"),
    ("Perforin", "PRF1"),
    ("CD94", "KLRD1"),
    ("CD62L", "SELL", "L-selectin"),
    ("CCR7", "CD197"),
    ("CD127", "IL7R"),
    ("CD71", "TFRC"),
    ("T-bet", "TBX21", "TBET"),
    ("CD10", "MME"),
    ("p53", "TP53"),
    ("HER2", "ERBB2"),
    ("ER", "ESR1"),
    ("PR", "PGR"),
    ("CD146", "MCAM"),
    ("MelanA", "MLANA", "MART-1"),
    ("vWF", "VWF", "von Willebrand factor"),
    ("SMMHC", "MYH11"),
    ("CD1c", "BDCA1", "BDCA-1"),
    ("IgM", "IGHM"),
    ("CD44",),
    ("ELANE", "Neutrophil elastase"),
    ("PNAd", "MECA-79", "MECA79", "peripheral node addressin"),
    ("CD45R", "B220"),
    ("IgD", "IGHD"),
    ("CD23", "FCER2"),
    ("CD35", "CR1"),
    ("CXCR5", "CD185"),
    ("ICOS", "CD278"),
    ("BCL6", "BCL-6"),
    ("CD27", "TNFRSF7"),
    ("IRF4", "MUM1"),
    ("PAX5", "BSAP"),
    ("LAMP3", "DC-LAMP", "CD208"),
    ("CD68", "KP1"),
)

_GREEK = str.maketrans({"α": "a", "β": "b", "γ": "g", "δ": "d", "ε": "e", "κ": "k", "λ": "l"})
_NON_ALNUM = re.compile(r"[^0-9a-z]+")


def canonical_name(name: str) -> str:
    """Lower-case ``name``, spell Greek letters in Latin and drop everything but letters and digits."""
    return _NON_ALNUM.sub("", str(name).strip().lower().translate(_GREEK))


GROUP_OF: dict[str, int] = {canonical_name(a): g for g, group in enumerate(ALIASES) for a in group}


#: genome prefixes of multi-genome references (Cell Ranger's ``hg19_CD3E``, ``GRCh38_CD3E``, ``mm10---Cd3e``)
_GENOME_PREFIX = re.compile(r"^(?:hg19|hg38|grch37|grch38|mm9|mm10|mm39|grcm38|grcm39)(?:[_.:|]|-+)", re.IGNORECASE)
_PARENTHESES = re.compile(r"^\s*([^()]+?)\s*\(([^()]+)\)\s*$")


def feature_name_variants(name: str) -> list[str]:
    """Other names a feature may go by: without a genome prefix, and both parts of ``'Name (Alias)'``.

    ``'hg19_CD3E'`` -> ``['CD3E']``; ``'MHCII (HLA-DR)'`` -> ``['MHCII', 'HLA-DR']`` (antibody-derived tag
    panels write clone or common names next to the CD name). The full name itself is not included.
    """
    out: list[str] = []
    base = _GENOME_PREFIX.sub("", str(name).strip())
    if base and base != str(name).strip():
        out.append(base)
    parts = _PARENTHESES.match(base)
    if parts:
        out.extend(p.strip() for p in parts.groups() if p.strip())
    return out
