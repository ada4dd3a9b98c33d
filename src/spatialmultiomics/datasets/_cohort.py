"""A synthetic cohort of labelled cells with planted differences between two conditions, and a null.

Design: ``n_patients`` patients per condition, ``n_images`` images per patient, ``n_cells`` cells per image placed
uniformly at random in a square (``density`` cells per µm²), so co-localization is random unless planted.

* Tissue structure, the same in both conditions: 80 % of the tumour cells sit in a few round nests, which other
  cells mostly avoid (a point inside a nest is kept with probability 0.2), so tumour-tumour attraction and tumour-immune avoidance are strong in every image but
  do not differ between conditions.
* Abundance: the proportions of a patient are Dirichlet around the condition's proportions (concentration
  ``patient_concentration``), those of an image Dirichlet around its patient's (``image_concentration``), and the
  counts multinomial. In the second condition ``"B cell"`` has its log odds raised by ``abundance_effect`` and
  ``"Stroma"`` loses exactly the proportion ``"B cell"`` gains, so every other type keeps its proportion: the
  planted truth is two types, the rest are true nulls.
* Co-localization: a fraction of the ``"CD8 T"`` cells are put next to a ``"Macrophage"`` (a new point within
  12 µm of a random macrophage, each macrophage used once) and likewise ``"B cell"`` next to ``"CD4 T"``. The fraction
  is ``base_attached`` in the reference condition and ``base_attached + pair_effect`` in the other (per patient
  with Gaussian noise of sd ``attached_sd``). Every other cell sits on a uniform random point (tumour cells
  preferably in the nests) and the anchors are a random subset of their type, so the attached cells are spread
  like their anchors: only the attached pairs change, the other 19 pairs are true nulls.

The truth of the abundance effect (log odds ratio of the patient-level proportions, from the Beta means of the
Dirichlet, ``E[logit] = digamma(a) - digamma(b)``) is returned with the cells.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

import numpy as np

from spatialmultiomics._errors import InputError
from spatialmultiomics._random import check_random_state
from spatialmultiomics._validate import check_in_range, check_positive, check_positive_int

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["COHORT_TYPES", "PLANTED_PAIRS", "SyntheticCohort", "synthetic_cohort"]

#: cell type -> proportion in the reference condition
COHORT_TYPES: dict[str, float] = {
    "Tumour": 0.35,
    "Stroma": 0.20,
    "Macrophage": 0.12,
    "CD8 T": 0.10,
    "CD4 T": 0.10,
    "B cell": 0.08,
    "Unknown": 0.05,
}
#: (anchor type, attached type): the attached type is moved next to the anchor type
PLANTED_PAIRS = (("Macrophage", "CD8 T"), ("CD4 T", "B cell"))
UP, DOWN = "B cell", "Stroma"  # planted abundance: UP gains in the second condition what DOWN loses
_IN_NEST = 0.8  # tumour cells inside a nest; other cells inside a nest are kept with 1 - this
_ATTACH_UM = 12.0  # attached cells lie within this distance of their anchor


@dataclass(frozen=True)
class SyntheticCohort:
    """Cells of a synthetic cohort and the planted truth.

    Attributes
    ----------
    cells
        One row per cell: ``cell_id``, ``x``, ``y`` (µm), ``cell_type``, ``sample``, ``patient``, ``condition``,
        ``age`` (a per-patient covariate without effect).
    truth_abundance
        One row per type: ``cell_type``, ``condition``, ``reference``, ``effect`` (true log odds ratio, condition
        versus reference), ``planted`` (bool).
    truth_pairs
        One row per unordered pair of types (names in sorted order, as :func:`~spatialmultiomics.cohort.compare`
        reports them): ``cell_type_a``, ``cell_type_b``, ``planted`` (bool), ``direction`` (+1 for a planted
        attraction in the second condition, 0 otherwise).
    params
        Arguments used.
    """

    cells: pd.DataFrame
    truth_abundance: pd.DataFrame
    truth_pairs: pd.DataFrame
    params: dict[str, Any] = field(default_factory=dict)


def _proportions(abundance_effect: float) -> tuple[np.ndarray, np.ndarray]:
    from scipy.special import expit, logit

    names = list(COHORT_TYPES)
    p0 = np.array([COHORT_TYPES[t] for t in names])
    p1 = p0.copy()
    up, down = names.index(UP), names.index(DOWN)
    p1[up] = float(expit(logit(p0[up]) + abundance_effect))
    p1[down] = p0[down] - (p1[up] - p0[up])
    if not 0.005 < p1[down] < 1:
        msg = f"abundance_effect={abundance_effect!r} is too large: {DOWN!r} would lose all its cells; use |effect| <= 1.3."
        raise InputError(msg)
    return p0, p1


def _expected_logit(p: np.ndarray, concentration: float) -> np.ndarray:
    from scipy.special import digamma

    return digamma(concentration * p) - digamma(concentration * (1 - p))


def _image(
    rng: np.random.Generator, counts: np.ndarray, attached: dict[tuple[str, str], float], density: float
) -> tuple[np.ndarray, np.ndarray]:
    """Coordinates (n, 2) and type codes (n,) of one image with the given counts per type.

    The attached cells of each planted pair get new points within ``_ATTACH_UM`` of a random anchor cell (each
    anchor used once); every other cell sits on a uniform random point, tumour cells preferably inside the nests.
    No point is taken from another type, so only the planted pairs change.
    """
    names = list(COHORT_TYPES)
    n = int(counts.sum())
    side = np.sqrt(n / density)
    n_att = {}
    rest = counts.copy()
    for anchor, moved in PLANTED_PAIRS:
        a, b = names.index(anchor), names.index(moved)
        k = min(int(rng.binomial(int(counts[b]), attached[(anchor, moved)])), int(counts[a]))
        n_att[(a, b)] = k
        rest[b] -= k
    tumour_code = names.index("Tumour")
    n_nests = int(rng.integers(3, 6))
    centres = rng.random((n_nests, 2)) * side
    nest_radius = side * np.sqrt(COHORT_TYPES["Tumour"] / (np.pi * n_nests))

    def in_nest(points: np.ndarray) -> np.ndarray:
        return (np.linalg.norm(points[:, None, :] - centres[None], axis=2) < nest_radius).any(axis=1)

    # tumour cells: in a random nest with probability _IN_NEST, else anywhere
    n_tumour = int(rest[tumour_code])
    angle, dist = rng.random(n_tumour) * 2 * np.pi, nest_radius * np.sqrt(rng.random(n_tumour))
    nest_pts = centres[rng.integers(0, n_nests, n_tumour)] + np.column_stack(
        [dist * np.cos(angle), dist * np.sin(angle)]
    )
    tumour_xy = np.where((rng.random(n_tumour) < _IN_NEST)[:, None], nest_pts, rng.random((n_tumour, 2)) * side)
    tumour_xy = np.clip(tumour_xy, 0.0, side)
    # other cells: uniform, a point inside a nest kept with probability 1 - _IN_NEST (rejection sampling)
    n_other = int(rest.sum()) - n_tumour
    other_xy = np.empty((0, 2))
    while other_xy.shape[0] < n_other:
        cand = rng.random((2 * n_other + 16, 2)) * side
        keep = ~in_nest(cand) | (rng.random(cand.shape[0]) >= _IN_NEST)
        other_xy = np.concatenate([other_xy, cand[keep]])
    other_xy = other_xy[:n_other]
    others = rest.copy()
    others[tumour_code] = 0
    xy = np.concatenate([tumour_xy, other_xy])
    labels = np.concatenate(
        [np.full(n_tumour, tumour_code, dtype=np.int64), rng.permutation(np.repeat(np.arange(len(names)), others))]
    )

    new_xy, new_labels = [xy], [labels]
    for (a, b), k in n_att.items():
        if k == 0:
            continue
        anchors = rng.choice(np.flatnonzero(labels == a), size=k, replace=False)
        angle = rng.random(k) * 2 * np.pi
        dist = _ATTACH_UM * np.sqrt(rng.random(k))
        pts = xy[anchors] + np.column_stack([dist * np.cos(angle), dist * np.sin(angle)])
        new_xy.append(np.clip(pts, 0.0, side))
        new_labels.append(np.full(k, b, dtype=np.int64))
    return np.concatenate(new_xy), np.concatenate(new_labels)


def synthetic_cohort(
    *,
    n_patients: int = 10,
    n_images: int = 3,
    n_cells: int = 1000,
    abundance_effect: float = 1.0,
    pair_effect: float = 0.3,
    base_attached: float = 0.1,
    attached_sd: float = 0.05,
    patient_concentration: float = 100.0,
    image_concentration: float = 300.0,
    density: float = 1 / 400,
    conditions: tuple[str, str] = ("control", "case"),
    seed: int | None = 0,
) -> SyntheticCohort:
    """A labelled cohort with planted abundance and co-localization differences between two conditions.

    See the module documentation for the design. ``abundance_effect=0`` and ``pair_effect=0`` give a null cohort
    (no difference between the conditions).

    Parameters
    ----------
    n_patients
        Patients per condition.
    n_images
        Images (samples) per patient.
    n_cells
        Cells per image.
    abundance_effect
        Log odds ratio of ``"B cell"`` (second condition versus first); ``"Stroma"`` compensates.
    pair_effect
        Increase of the fraction of ``"CD8 T"`` / ``"B cell"`` cells put next to a ``"Macrophage"`` / ``"CD4 T"``.
    base_attached
        That fraction in the first condition.
    attached_sd
        Between-patient standard deviation of the fraction.
    patient_concentration, image_concentration
        Dirichlet concentrations of the patient and image proportions (larger = less variation).
    density
        Cells per µm² (default one per 400 µm², i.e. 20 µm apart).
    conditions
        Names of the reference and the other condition.
    seed
        Seed of everything random.

    Returns
    -------
    :class:`SyntheticCohort` with the cells and the planted truth.

    Examples
    --------
    >>> from spatialmultiomics.datasets import synthetic_cohort
    >>> data = synthetic_cohort(n_patients=3, n_images=2, n_cells=300, seed=0)
    >>> data.cells["sample"].nunique(), sorted(data.cells["condition"].unique())
    (12, ['case', 'control'])
    """
    import pandas as pd

    n_patients = check_positive_int(n_patients, name="n_patients")
    n_images = check_positive_int(n_images, name="n_images")
    n_cells = check_positive_int(n_cells, name="n_cells", minimum=50)
    pair_effect = check_in_range(pair_effect, name="pair_effect", low=-base_attached, high=0.9 - base_attached)
    check_in_range(base_attached, name="base_attached", low=0.0, high=0.9)
    check_positive(attached_sd, name="attached_sd", allow_zero=True)
    check_positive(patient_concentration, name="patient_concentration")
    check_positive(image_concentration, name="image_concentration")
    check_positive(density, name="density")
    rng = check_random_state(seed)
    names = list(COHORT_TYPES)
    p0, p1 = _proportions(float(abundance_effect))
    frames = []
    for c, (cond, props) in enumerate(zip(conditions, (p0, p1), strict=True)):
        frac = base_attached + (pair_effect if c == 1 else 0.0)
        for i in range(n_patients):
            patient = f"{cond}_P{i:02d}"
            p_patient = rng.dirichlet(patient_concentration * props)
            att = {pair: float(np.clip(frac + rng.normal(0, attached_sd), 0.0, 0.95)) for pair in PLANTED_PAIRS}
            age = float(rng.normal(60, 10))
            for j in range(n_images):
                p_image = rng.dirichlet(image_concentration * p_patient)
                counts = rng.multinomial(n_cells, p_image)
                xy, labels = _image(rng, counts, att, density)
                sample = f"{patient}_I{j}"
                frames.append(
                    pd.DataFrame(
                        {
                            "cell_id": [f"{sample}_c{k}" for k in range(labels.size)],
                            "x": xy[:, 0],
                            "y": xy[:, 1],
                            "cell_type": np.asarray(names, dtype=object)[labels],
                            "sample": sample,
                            "patient": patient,
                            "condition": cond,
                            "age": age,
                        }
                    )
                )
    cells = pd.concat(frames, ignore_index=True)
    cells["condition"] = pd.Categorical(cells["condition"], categories=list(conditions))
    effect = _expected_logit(p1, patient_concentration) - _expected_logit(p0, patient_concentration)
    typed = [t for t in names if t != "Unknown"]
    truth_abundance = pd.DataFrame(
        {
            "cell_type": typed,
            "condition": conditions[1],
            "reference": conditions[0],
            "effect": [float(effect[names.index(t)]) if t in (UP, DOWN) else 0.0 for t in typed],
            "planted": [t in (UP, DOWN) and abundance_effect != 0 for t in typed],
        }
    )
    ordered = sorted(typed)
    planted = {frozenset(p) for p in PLANTED_PAIRS} if pair_effect != 0 else set()
    rows = []
    for i, a in enumerate(ordered):
        for b in ordered[i:]:
            hit = frozenset((a, b)) in planted and a != b
            rows.append((a, b, hit, int(np.sign(pair_effect)) if hit else 0))
    truth_pairs = pd.DataFrame(rows, columns=["cell_type_a", "cell_type_b", "planted", "direction"])
    params = {
        "n_patients": n_patients,
        "n_images": n_images,
        "n_cells": n_cells,
        "abundance_effect": float(abundance_effect),
        "pair_effect": float(pair_effect),
        "base_attached": float(base_attached),
        "attached_sd": float(attached_sd),
        "patient_concentration": float(patient_concentration),
        "image_concentration": float(image_concentration),
        "density": float(density),
        "conditions": list(conditions),
        "seed": seed,
    }
    return SyntheticCohort(cells, truth_abundance, truth_pairs, params)
