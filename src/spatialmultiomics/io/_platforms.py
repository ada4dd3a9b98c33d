"""Platform names, their modality and what reading a table for them means."""

from __future__ import annotations

from spatialmultiomics._errors import InputError

__all__ = ["PLATFORMS", "normalize_platform"]

#: canonical platform name -> (modality kind, human name)
PLATFORMS: dict[str, tuple[str, str]] = {
    "visium": ("rna", "10x Visium"),
    "visium_hd": ("rna", "10x Visium HD"),
    "merfish": ("rna", "MERFISH / MERSCOPE"),
    "xenium": ("rna", "10x Xenium"),
    "stereoseq": ("rna", "Stereo-seq"),
    "cosmx": ("any", "CosMx SMI"),
    "codex": ("protein", "CODEX / PhenoCycler"),
    "mibi": ("protein", "MIBI"),
    "imc": ("protein", "Imaging mass cytometry"),
    "cycif": ("protein", "CyCIF"),
    "inform": ("protein", "Akoya inForm / PhenoCycler-Fusion export"),
    "qupath": ("protein", "QuPath measurement export"),
    "halo": ("protein", "HALO object data"),
    "generic": ("any", "standardized table / AnnData"),
}

_ALIASES = {
    "merscope": "merfish",
    "visiumhd": "visium_hd",
    "visium-hd": "visium_hd",
    "visium hd": "visium_hd",
    "cosmx smi": "cosmx",
    "cosmx-smi": "cosmx",
    "smi": "cosmx",
    "vectra": "inform",
    "phenoimager": "inform",
    "phenoptr": "inform",
    "stereo-seq": "stereoseq",
    "stereo_seq": "stereoseq",
    "phenocycler": "codex",
    "mibitof": "mibi",
    "mibi-tof": "mibi",
    "table": "generic",
    "csv": "generic",
    "h5ad": "generic",
    "anndata": "generic",
}


def normalize_platform(platform: str | None, *, name: str = "platform") -> str:
    """Return the canonical lower-case platform name (``None`` -> ``'generic'``); case-insensitive."""
    if platform is None:
        return "generic"
    key = str(platform).strip().lower()
    key = _ALIASES.get(key, key)
    if key not in PLATFORMS:
        allowed = ", ".join(
            [
                "Visium",
                "Visium HD",
                "MERFISH",
                "MERSCOPE",
                "Xenium",
                "Stereo-seq",
                "CosMx",
                "CODEX",
                "MIBI",
                "IMC",
                "CyCIF",
                "inForm",
                "QuPath",
                "HALO",
                "generic",
            ]
        )
        msg = f"{name}={platform!r} is not a known platform; allowed (case-insensitive): {allowed}."
        raise InputError(msg)
    return key
