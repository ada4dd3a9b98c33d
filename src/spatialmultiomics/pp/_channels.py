"""Channels of intensity panels that carry no cell-type information: DNA / nuclear stains and background.

Imaging panels (CODEX, CyCIF, IMC, MIBI) record DNA stains (DAPI, Hoechst, the iridium intercalator Ir191 / Ir193,
total histone H3) for segmentation, and background or calibration channels (``Background``, empty / blank cycles,
MIBI's elemental C, Na, Si, Ta, Au, IMC's gas and contamination masses). Every cell has a nucleus, so these
channels vary with nuclear size and focus, not with cell type; fed to the factorization they take a factor of
their own (or blur every factor). :func:`non_marker_channels` finds them by name so that
:func:`smo.pp.preprocess` can leave them out of the factorization while keeping them in the data.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Sequence

import numpy as np

from spatialmultiomics._errors import InputError

__all__ = ["NON_MARKER_CHANNELS", "non_marker_channels"]

_SEP = r"[ _.\-]?"  # an optional separator inside a channel name: "DNA_1", "Histone H3", "Histone.H3"

#: Channel names left out of the factorization by default: case-insensitive regular expressions, each matched
#: against the whole name (surrounding spaces removed). Histone modifications (H3K27me3, H3K9ac) and phospho-
#: histone H3 (pHH3, a mitosis marker) are markers and do not match.
NON_MARKER_CHANNELS: tuple[str, ...] = (
    # DNA and nuclear stains
    r"dapi.*",  # DAPI, DAPI1, DAPI_cycle2
    r"hoechst.*",  # Hoechst, Hoechst33342
    rf"dna{_SEP}\d*",  # DNA, DNA1, DNA_6 (CyCIF / MCMICRO), DNA 2
    rf"(dna{_SEP}\d*{_SEP}[(\[]?)?(ir{_SEP}19[13]|19[13]{_SEP}ir)(di)?[)\]]?",  # Ir191, 193Ir, DNA1(Ir191), Ir193Di
    r"iridium.*",
    rf"(total{_SEP})?(histone{_SEP}h?3|hh3|h3)({_SEP}total)?",  # H3, HH3 (MIBI), Histone H3, HistoneH3
    rf"draq{_SEP}[57]",  # DRAQ5, DRAQ7
    rf"sytox?{_SEP}\w*",  # SYTO13, SYTOX Green
    rf"nuc(lear|lei|leus)?({_SEP}(stain|dye|marker|blue|red|green))?",  # Nuclear, Nuclear stain, NucBlue
    # background, empty and blank channels
    r"background.*",
    rf"\d*{_SEP}(bkg|bkgd|bckg|bg){_SEP}\d*",  # BG, BG1, Bkg, 190BCKG (Fluidigm)
    r"empty.*",
    r"blank.*",
    rf"auto{_SEP}fluo(rescence)?.*",  # Autofluorescence, Auto_fluo_488
    r"unstained.*",
    # elemental / calibration masses of MIBI and IMC (no antibody)
    r"c|na|si|ta|au",  # MIBI: carbon, sodium, silicon (slide), tantalum and gold (coating)
    rf"(xe{_SEP}1[23]\d|1[23]\d{_SEP}xe)(di)?",  # xenon (argon impurity), Xe131, 131Xe
    rf"(ar{_SEP}(40|80)|(40|80){_SEP}ar|pb{_SEP}20[4678]|20[4678]{_SEP}pb|hg{_SEP}20[0-4]|i{_SEP}127|127{_SEP}i)(di)?",
)


def _compile(patterns: Iterable[str]) -> list[tuple[str, re.Pattern[str] | None]]:
    """Each entry lower-cased, with its compiled regex (None when it is not a valid regular expression)."""
    out = []
    for p in patterns:
        try:
            rx = re.compile(p, flags=re.IGNORECASE)
        except re.error:
            rx = None
        out.append((p.strip().lower(), rx))
    return out


def check_exclude_channels(exclude_channels: Sequence[str] | str | None) -> tuple[str, ...]:
    """``exclude_channels`` as a tuple of patterns (None: empty; one string: one pattern)."""
    if exclude_channels is None:
        return ()
    items = (exclude_channels,) if isinstance(exclude_channels, str) else exclude_channels
    try:
        items = tuple(items)
    except TypeError:
        items = None
    if items is None or not all(isinstance(p, str) for p in items):
        msg = (
            f"exclude_channels must be None, a channel name / pattern or a list of them (strings), got "
            f"{exclude_channels!r}."
        )
        raise InputError(msg)
    return items


def non_marker_channels(names: Iterable[str], *, patterns: Sequence[str] | None = NON_MARKER_CHANNELS) -> np.ndarray:
    """Boolean mask of the channel names that match one of ``patterns``.

    Parameters
    ----------
    names
        Channel names (``adata.var_names`` of an intensity modality).
    patterns
        Channel names or regular expressions, case-insensitive, each matched against the whole name (surrounding
        spaces removed); a name equal to an entry (ignoring case) matches too, so names with brackets work as
        they are. Default :data:`NON_MARKER_CHANNELS` (DNA / nuclear stains, background, empty and blank
        channels, elemental calibration masses); None matches nothing.

    Returns
    -------
    Array of bool, shape (n_names,), True for the channels that match.

    Examples
    --------
    >>> from spatialmultiomics.pp import non_marker_channels
    >>> non_marker_channels(["DAPI", "CD3", "DNA_6", "Ir191", "HistoneH3", "H3K27me3", "pHH3", "Background"]).tolist()
    [True, False, True, True, True, False, False, True]
    """
    compiled = _compile(check_exclude_channels(patterns))
    out = []
    for name in names:
        text = str(name).strip()
        low = text.lower()
        out.append(any(low == plain or (rx is not None and rx.fullmatch(text)) for plain, rx in compiled))
    return np.asarray(out, dtype=bool)
