"""Linked features between modalities: which genes code the protein a channel measures (DESIGN §3.2).

Integration without cell-to-cell correspondence (MaxFuse, MARIO) starts from the features that both modalities
measure, one directly and one through its gene: the CD8 channel and the CD8A / CD8B transcripts, PanCK and the
keratin genes, CD45 and PTPRC. :data:`PROTEIN_GENE_LINKS` is the built-in table; :func:`load_links` extends it from
a dict or a file, and :func:`resolve_links` finds the linked pairs in two feature panels. Channel names are matched
the way marker names are (:func:`spatialmultiomics._names.canonical_name` and its alias groups, so ``PanCK`` /
``Pan-Keratin`` / ``pan-cytokeratin``, ``CD3e`` / ``CD3``, ``PD1 (CD279)`` / ``PD-1`` all work); gene symbols are
matched case-insensitively, with genome prefixes (``hg19_CD3E``) dropped.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from functools import cache
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from spatialmultiomics._errors import InputError
from spatialmultiomics._names import ALIASES, canonical_name, feature_name_variants

__all__ = ["PROTEIN_GENE_LINKS", "LinkTable", "LinkedFeatures", "load_links", "resolve_links"]

#: protein (channel names it goes by) -> the genes that code it. A channel that binds several gene products
#: (PanCK: several keratins; CD3: the CD3 complex) links to all of them; their expression is summed.
PROTEIN_GENE_LINKS: tuple[tuple[tuple[str, ...], tuple[str, ...]], ...] = (
    (("CD45", "LCA", "CD45RA", "CD45RO", "CD45RB", "CD45R", "B220"), ("PTPRC",)),
    (("CD3", "CD3e", "CD3d", "CD3g"), ("CD3E", "CD3D", "CD3G")),
    (("CD4",), ("CD4",)),
    (("CD8", "CD8a", "CD8b"), ("CD8A", "CD8B")),
    (("CD2",), ("CD2",)),
    (("CD5",), ("CD5",)),
    (("CD7",), ("CD7",)),
    (("TCRb", "TCR beta", "TCRab", "TCR alpha/beta"), ("TRBC1", "TRBC2", "TRAC")),
    (("TCRg", "TCRgd", "TCR gamma/delta", "TCR Vd2"), ("TRGC1", "TRGC2", "TRDC")),
    (("FOXP3",), ("FOXP3",)),
    (("CD25",), ("IL2RA",)),
    (("CD127", "IL7Ralpha", "IL7Ra", "IL-7Ra"), ("IL7R",)),
    (("CD62L",), ("SELL",)),
    (("CCR7",), ("CCR7",)),
    (("CD27",), ("CD27",)),
    (("CD28",), ("CD28",)),
    (("CD69",), ("CD69",)),
    (("CD44",), ("CD44",)),
    (("CD38",), ("CD38",)),
    (("PD-1", "PD1"), ("PDCD1",)),
    (("PD-L1", "B7-H1"), ("CD274",)),
    (("CTLA4", "CTLA-4", "CD152"), ("CTLA4",)),
    (("LAG-3", "CD223"), ("LAG3",)),
    (("TIM-3", "TIM3", "CD366"), ("HAVCR2",)),
    (("OX40", "CD134"), ("TNFRSF4",)),
    (("ICOS",), ("ICOS",)),
    (("Granzyme B",), ("GZMB",)),
    (("Granzyme A", "GZMA"), ("GZMA",)),
    (("Perforin",), ("PRF1",)),
    (("CD56",), ("NCAM1",)),
    (("CD16",), ("FCGR3A", "FCGR3B")),
    (("CD57",), ("B3GAT1",)),
    (("NKp46",), ("NCR1",)),
    (("CD94",), ("KLRD1",)),
    (("NKG2D", "CD314"), ("KLRK1",)),
    (("CD20",), ("MS4A1",)),
    (("CD19",), ("CD19",)),
    (("CD79a",), ("CD79A",)),
    (("CD22",), ("CD22",)),
    (("CD21",), ("CR2",)),
    (("CD23",), ("FCER2",)),
    (("PAX5",), ("PAX5",)),
    (("IgM",), ("IGHM",)),
    (("IgD",), ("IGHD",)),
    (("CD138",), ("SDC1",)),
    (("HLA-DR", "MHCII", "MHC-II"), ("HLA-DRA", "HLA-DRB1")),
    (("HLA-ABC", "HLA-A,B,C", "HLA class I", "MHC-I", "MHCI"), ("HLA-A", "HLA-B", "HLA-C")),
    (("CD68",), ("CD68",)),
    (("CD163",), ("CD163",)),
    (("CD14",), ("CD14",)),
    (("CD11b",), ("ITGAM",)),
    (("CD11c",), ("ITGAX",)),
    (("CD33",), ("CD33",)),
    (("CD64",), ("FCGR1A",)),
    (("CD206",), ("MRC1",)),
    (("CD1a",), ("CD1A",)),
    (("CD1c",), ("CD1C",)),
    (("CD123",), ("IL3RA",)),
    (("CD141",), ("THBD",)),
    (("CD303",), ("CLEC4C",)),
    (("CD209",), ("CD209",)),
    (("CD66b",), ("CEACAM8",)),
    (("CD15",), ("FUT4",)),
    (("MPO",), ("MPO",)),
    (("CD117", "C-kit"), ("KIT",)),
    (("Tryptase",), ("TPSAB1", "TPSB2")),
    (("Siglec-8", "Siglec8"), ("SIGLEC8",)),
    (("CD24",), ("CD24",)),
    (("CD26", "DPP4"), ("DPP4",)),
    (("CD34",), ("CD34",)),
    (("CD77", "Gb3"), ("A4GALT",)),
    (("LAMP1", "CD107a"), ("LAMP1",)),
    (("CD71",), ("TFRC",)),
    (("CD103",), ("ITGAE",)),
    (("CD39",), ("ENTPD1",)),
    (("CD73",), ("NT5E",)),
    (("Ki67",), ("MKI67",)),
    (("PanCK",), ("KRT8", "KRT18", "KRT19", "KRT7", "KRT5", "KRT14", "KRT17", "KRT6A")),
    (("CK8",), ("KRT8",)),
    (("CK18",), ("KRT18",)),
    (("CK19",), ("KRT19",)),
    (("CK7",), ("KRT7",)),
    (("CK5",), ("KRT5",)),
    (("CK14", "Cytokeratin 14"), ("KRT14",)),
    (("CK17", "Cytokeratin 17"), ("KRT17",)),
    (("E-cadherin",), ("CDH1",)),
    (("EpCAM", "CD326"), ("EPCAM",)),
    (("MUC1",), ("MUC1",)),
    (("beta-catenin",), ("CTNNB1",)),
    (("HER2",), ("ERBB2",)),
    (("ER",), ("ESR1",)),
    (("PR",), ("PGR",)),
    (("p53",), ("TP53",)),
    (("aSMA",), ("ACTA2",)),
    (("Vimentin",), ("VIM",)),
    (("Desmin",), ("DES",)),
    (("SMMHC",), ("MYH11",)),
    (("PDGFRB",), ("PDGFRB",)),
    (("FAP",), ("FAP",)),
    (("Collagen I",), ("COL1A1", "COL1A2")),
    (("Collagen IV",), ("COL4A1", "COL4A2")),
    (("Podoplanin",), ("PDPN",)),
    (("CD31", "PECAM"), ("PECAM1",)),
    (("vWF",), ("VWF",)),
    (("CD146",), ("MCAM",)),
    (("LYVE1",), ("LYVE1",)),
    (("CD10",), ("MME",)),
    (("IDO1",), ("IDO1",)),
    (("Arginase-1",), ("ARG1",)),
    (("MelanA",), ("MLANA",)),
    (("SOX10",), ("SOX10",)),
    (("TCF1",), ("TCF7",)),
    (("T-bet",), ("TBX21",)),
    (("GATA3",), ("GATA3",)),
    (("BCL2", "Bcl-2"), ("BCL2",)),
    (("BCL6",), ("BCL6",)),
    (("IRF4",), ("IRF4",)),
    (("CXCR5",), ("CXCR5",)),
    (("LAMP3",), ("LAMP3",)),
)

#: channel names that are never linked: isotype controls and nuclear / background stains
_NEVER_NAMES = ("IgG1", "IgG2a", "IgG2b", "IgG", "Isotype", "DAPI", "Hoechst", "DNA1", "DNA2", "Histone H3", "Blank")


@cache
def _never() -> frozenset[str]:
    return frozenset(canonical_name(n) for n in _NEVER_NAMES)


@cache
def _alias_groups() -> tuple[frozenset[str], ...]:
    return tuple(frozenset(canonical_name(a) for a in group) for group in ALIASES)


@dataclass(frozen=True)
class LinkTable:
    """A protein -> genes table: ``proteins[i]`` (the names a channel goes by) is coded by ``genes[i]``."""

    proteins: tuple[tuple[str, ...], ...]
    genes: tuple[tuple[str, ...], ...]

    def __len__(self) -> int:
        return len(self.proteins)

    def key_of(self) -> dict[str, tuple[int, int]]:
        """Canonical channel name -> (entry, rank): an entry's own names rank by position (the first name is the
        preferred channel), names from their marker alias groups rank after them."""
        out: dict[str, tuple[int, int]] = {}
        for i, names in enumerate(self.proteins):
            canon = {canonical_name(n) for n in names}
            for group in _alias_groups():
                if canon & group:
                    for c in sorted(group - canon):
                        out.setdefault(c, (i, 50))
        # an entry's own names win over another entry's alias group (CK8 is not PanCK)
        for i, names in enumerate(self.proteins):
            for r, n in enumerate(names):
                c = canonical_name(n)
                if c not in out or out[c][1] >= 50:
                    out[c] = (i, r)
        return out

    def to_frame(self) -> pd.DataFrame:
        """One row per protein: its names and genes joined by ``'/'``."""
        return pd.DataFrame(
            {"protein": ["/".join(p) for p in self.proteins], "genes": ["/".join(g) for g in self.genes]}
        )


@dataclass(frozen=True)
class LinkedFeatures:
    """Linked features found in two panels: for link ``i``, ``ref_features[i]`` pair with ``other_features[i]``.

    Each side lists the column indices whose values are summed into the link's value (one channel on the protein
    side, one or more genes on the gene side). ``orientation`` says which modality holds the proteins:
    ``'other'``, ``'ref'`` or ``'same'`` (both panels measure the same features under the same or alias names).
    """

    names: tuple[str, ...]
    ref_features: tuple[tuple[int, ...], ...]
    other_features: tuple[tuple[int, ...], ...]
    orientation: str

    def __len__(self) -> int:
        return len(self.names)

    def to_frame(self, ref_names: Sequence[str], other_names: Sequence[str]) -> pd.DataFrame:
        """One row per link: its name and the feature names on each side."""
        return pd.DataFrame(
            {
                "link": list(self.names),
                "ref": ["/".join(str(ref_names[j]) for j in f) for f in self.ref_features],
                "other": ["/".join(str(other_names[j]) for j in f) for f in self.other_features],
            }
        )


def _entries_from_mapping(mapping: Mapping[Any, Any], source: str) -> list[tuple[tuple[str, ...], tuple[str, ...]]]:
    out = []
    for protein, genes in mapping.items():
        if isinstance(genes, str):
            genes = [g for g in genes.replace(";", "/").replace(",", "/").split("/") if g.strip()]
        if not isinstance(genes, Iterable) or isinstance(genes, Mapping):
            msg = f"links from {source}: genes of {protein!r} must be a name or a list of names, got {genes!r}."
            raise InputError(msg)
        genes = tuple(str(g).strip() for g in genes if str(g).strip())
        if not genes:
            msg = f"links from {source}: protein {protein!r} has no gene."
            raise InputError(msg)
        names = tuple(p.strip() for p in str(protein).split("|") if p.strip())
        out.append((names, genes))
    return out


def _read_links_file(path: Path) -> Mapping[str, Any]:
    if not path.is_file():
        msg = f"links file {str(path)!r} does not exist; pass a dict {{protein: [genes]}} or a CSV / JSON / YAML file."
        raise InputError(msg)
    suffix = path.suffix.lower()
    if suffix == ".json":
        data = json.loads(path.read_text())
    elif suffix in (".yaml", ".yml"):
        import yaml

        data = yaml.safe_load(path.read_text())
    else:
        frame = pd.read_csv(path, sep=None, engine="python", dtype=str)
        if frame.shape[1] < 2:
            msg = f"links file {str(path)!r} needs two columns (protein, gene); it has {frame.shape[1]}."
            raise InputError(msg)
        data = {}
        for protein, gene in frame.iloc[:, :2].dropna().itertuples(index=False):
            data.setdefault(str(protein), []).extend(g for g in str(gene).replace(";", "/").split("/") if g.strip())
    if not isinstance(data, Mapping):
        msg = f"links file {str(path)!r} must hold a mapping protein -> gene(s), got {type(data).__name__}."
        raise InputError(msg)
    return data


def load_links(links: LinkTable | Mapping[str, Any] | str | Path | None = None, *, extend: bool = True) -> LinkTable:
    """The protein -> gene linking table: the built-in one, extended (or replaced) by the user's.

    Parameters
    ----------
    links
        None (built-in :data:`PROTEIN_GENE_LINKS`), a :class:`LinkTable`, a dict ``{protein: gene or [genes]}``
        (``'CD8': ['CD8A', 'CD8B']``; several names of one channel as ``'PanCK|Pan-Keratin'``), or a file: CSV / TSV
        with columns protein, gene (one row per pair, or genes joined by ``/``), JSON or YAML holding the dict.
    extend
        True (default): the user's entries are added to the built-in table, replacing the entry of a protein they
        name again; False: only the user's entries are used.

    Returns
    -------
    The :class:`LinkTable`.

    Examples
    --------
    >>> table = load_links({"CD8": ["CD8A", "CD8B"], "MyMarker": "GENE1"})
    >>> len(table) > 100
    True
    """
    if isinstance(links, LinkTable):
        return links
    builtin = list(PROTEIN_GENE_LINKS) if (extend or links is None) else []
    if links is None:
        user: list[tuple[tuple[str, ...], tuple[str, ...]]] = []
    elif isinstance(links, Mapping):
        user = _entries_from_mapping(links, "the dict")
    elif isinstance(links, str | Path):
        user = _entries_from_mapping(_read_links_file(Path(links)), str(links))
    else:
        msg = f"links must be None, a dict {{protein: genes}}, a LinkTable or a file path, got {type(links).__name__}."
        raise InputError(msg)
    if user:
        named = {canonical_name(n) for names, _ in user for n in names}
        builtin = [e for e in builtin if not ({canonical_name(n) for n in e[0]} & named)]
    entries = builtin + user
    return LinkTable(tuple(e[0] for e in entries), tuple(e[1] for e in entries))


def _name_index(names: Sequence[str]) -> dict[str, int]:
    """Canonical name -> first column, full names first, then their variants (``hg19_CD3E`` -> ``CD3E``)."""
    out: dict[str, int] = {}
    for j, n in enumerate(names):
        out.setdefault(canonical_name(n), j)
    for j, n in enumerate(names):
        for v in feature_name_variants(n):
            out.setdefault(canonical_name(v), j)
    return out


def _protein_entries(names: Sequence[str], key_of: Mapping[str, tuple[int, int]]) -> dict[int, int]:
    """Table entry -> the channel of ``names`` that measures it best: a channel named like the entry's first name
    before other names, alias names, and the parts of ``'Name (Alias)'`` names."""
    best: dict[int, tuple[int, int]] = {}
    for j, n in enumerate(names):
        c = canonical_name(n)
        if c in _never():
            continue
        candidates = [(c, 0)] + [(canonical_name(v), 100) for v in feature_name_variants(n)]
        for cand, penalty in candidates:
            if cand in key_of:
                entry, rank = key_of[cand]
                if entry not in best or (rank + penalty, j) < best[entry]:
                    best[entry] = (rank + penalty, j)
                break
    return {entry: j for entry, (_, j) in best.items()}


def _oriented(
    protein_names: Sequence[str], gene_names: Sequence[str], table: LinkTable, key_of: Mapping[str, tuple[int, int]]
) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """Links with proteins on one side and genes on the other: (name, protein columns, gene columns)."""
    genes = _name_index(gene_names)
    out = []
    for entry, j in sorted(_protein_entries(protein_names, key_of).items(), key=lambda kv: kv[1]):
        cols = sorted({genes[c] for c in (canonical_name(g) for g in table.genes[entry]) if c in genes})
        if cols:
            out.append((str(protein_names[j]), (j,), tuple(cols)))
    return out


def _same(
    ref_names: Sequence[str], other_names: Sequence[str], key_of: Mapping[str, tuple[int, int]]
) -> list[tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """Links between two panels of the same kind: equal canonical names or the same protein entry."""
    other_idx = _name_index(other_names)
    other_entry = _protein_entries(other_names, key_of)
    out, used = [], set()
    for i, n in enumerate(ref_names):
        c = canonical_name(n)
        if c in _never():
            continue
        j = other_idx.get(c)
        if j is None:
            variants = [c] + [canonical_name(x) for x in feature_name_variants(n)]
            entry = next((key_of[v][0] for v in variants if v in key_of), None)
            j = other_entry.get(entry) if entry is not None else None
        if j is not None and j not in used:
            used.add(j)
            out.append((str(ref_names[i]), (i,), (j,)))
    return out


def resolve_links(
    ref_names: Sequence[str],
    other_names: Sequence[str],
    links: LinkTable | Mapping[str, Any] | str | Path | None = None,
) -> LinkedFeatures:
    """Find the linked features of two panels.

    Three readings are tried and the one with the most links is kept: the other modality measures proteins and
    the reference genes (``'other'``), the reverse (``'ref'``), or both measure the same features (``'same'``:
    equal names or alias names, e.g. two antibody panels).

    Parameters
    ----------
    ref_names, other_names
        Feature names of the two modalities.
    links
        Linking table, see :func:`load_links`.

    Returns
    -------
    The :class:`LinkedFeatures` (possibly empty).

    Examples
    --------
    >>> lf = resolve_links(["PTPRC", "CD8A", "CD8B", "KRT8"], ["CD45", "CD8a", "Pan-Keratin", "DAPI"])
    >>> lf.names, lf.ref_features
    (('CD45', 'CD8a', 'Pan-Keratin'), ((0,), (1, 2), (3,)))
    """
    table = load_links(links)
    key_of = table.key_of()
    ref_names, other_names = [str(n) for n in ref_names], [str(n) for n in other_names]
    readings = {
        "other": [(n, g, p) for n, p, g in _oriented(other_names, ref_names, table, key_of)],
        "ref": _oriented(ref_names, other_names, table, key_of),
        "same": _same(ref_names, other_names, key_of),
    }
    best = max(readings, key=lambda k: len(readings[k]))  # ties keep the first: other = proteins
    found = readings[best]
    return LinkedFeatures(
        names=tuple(n for n, _, _ in found),
        ref_features=tuple(r for _, r, _ in found),
        other_features=tuple(o for _, _, o in found),
        orientation=best,
    )


def linked_matrix(X: Any, features: Sequence[Sequence[int]]) -> np.ndarray:
    """Dense (n_obs, n_links) matrix: column ``i`` = sum of the columns ``features[i]`` of ``X`` (sparse or dense)."""
    import scipy.sparse as sp

    n_cols = X.shape[1]
    rows = np.concatenate([np.asarray(f, dtype=np.int64) for f in features]) if features else np.zeros(0, np.int64)
    cols = np.concatenate([np.full(len(f), i) for i, f in enumerate(features)]) if features else np.zeros(0, np.int64)
    S = sp.csr_matrix((np.ones(rows.size), (rows, cols)), shape=(n_cols, len(features)))
    out = X @ S
    return np.asarray(out.toarray() if sp.issparse(out) else out, dtype=np.float64)
