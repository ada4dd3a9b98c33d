"""The one place where container slot names live.

Every stage writes its results under these names and every reader of results (plots, writers, the CLI) finds them
here. Conventions for the factorization, written once for the whole package:

* The joint matrix is ``X = [w_1 X_1 | w_2 X_2 | ...]`` (cells x features), factorized as ``X ~ W @ H`` with
  ``W`` (n_cells, k) the **cell loadings** and ``H = [H_1 | H_2 | ...]`` (k, n_features) the **feature
  loadings**, one block per modality.
* ``obsm['X_nmf']`` holds ``W``; ``mdata[mod].varm['nmf_loadings']`` holds ``H_b.T`` (n_features_b, k).
* The seed's output names are the transposes: ``W_transcript = H_rna.T`` (n_genes, k),
  ``W_protein = H_protein.T`` (n_proteins, k) and ``H_shared = W.T`` (k, n_cells).
"""

from __future__ import annotations

__all__ = ["ABUNDANCE_COLUMNS", "COLOCALIZATION_COLUMNS", "DIFFERENTIAL_TEST_COLUMNS", "Keys"]


class Keys:
    """Slot names used in AnnData / MuData containers."""

    # modalities
    RNA = "rna"
    PROTEIN = "protein"

    # obs / obsm
    SPATIAL = "spatial"  # obsm: (n_obs, 2) float coordinates in micrometres (x, y)
    FOV = "fov"  # obs: field of view / sample / library id; graphs never cross it
    CELL_TYPE = "cell_type"  # obs: categorical cell type
    CELL_TYPE_CONFIDENCE = "cell_type_confidence"  # obs: float in [0, 1]
    FACTOR = "nmf_factor"  # obs: index of the dominant factor
    CLUSTER = "annotation_cluster"  # obs: cluster of annotate(method='cluster') (categorical)
    OVERRIDDEN = "cell_type_overridden"  # obs: bool, the cell's own markers overrode its cluster's name
    CELL_TYPE_FROM = "cell_type_from"  # obs: modalities a cell's type was read from ('joint', or e.g. 'rna')
    NMF = "X_nmf"  # obsm: (n_obs, k) cell loadings W
    NMF_LOADINGS = "nmf_loadings"  # varm of each modality: (n_features, k) = H_b.T
    NMF_UNS = "nmf"  # uns: params, loss, factor annotation table
    HVG = "highly_variable"  # var: bool
    PREPROCESSED = "preprocessed"  # layers: transformed values fed to the factorization
    SCALE_LOW = "scale_low"  # var of intensity modalities: per-channel offset of the scaling (transformed units)
    SCALE_SPAN = "scale_span"  # var of intensity modalities: per-channel spread of the scaling
    ARCSINH_COFACTOR = "arcsinh_cofactor"  # var of intensity modalities: arcsinh cofactor per channel (NaN: none)
    INTENSITY_TRANSFORM = "intensity_transform"  # uns of intensity modalities: transform used, rule and reason
    SPILL_COMPENSATED = "spill_compensated"  # layers of intensity modalities: spillover-compensated values (raw units)
    SPILLOVER = "spillover"  # uns of intensity modalities: spillover parameters and estimated strength
    SPILL_STRENGTH = "spill_strength"  # var of intensity modalities: estimated spill strength per channel
    RAW = "raw"  # layers: the measured values where X was replaced by a corrected version (spillover)
    COMPOSITION = "cell_type_composition"  # obsm of spots: fraction of the spot's cells of each type (DataFrame)
    COMPOSITION_SHARE = "cell_type_share"  # obs of spots: fraction of the spot's cells of the spot's type
    SPOT_CELLS = "spot_cells"  # uns: the single cells under the spots with their transferred types (DataFrame)
    SEPARATE = "separate_typing"  # uns: per modality set apart (route 'separate'): its cells' types, concordance

    # spatial graph
    GRAPH = "spatial_connectivities"  # obsp: CSR adjacency, no self-loops
    DISTANCES = "spatial_distances"  # obsp: CSR distances in micrometres
    GRAPH_UNS = "spatial_neighbors"  # uns: graph parameters
    NICHE_COMPOSITION = "niche_composition"  # obsm: (n_obs, n_types) neighbour type fractions
    NICHE_TYPE = "niche_type"  # obs: most frequent neighbour type
    N_NEIGHBORS = "n_neighbors"  # obs: number of neighbours
    NICHE = "niche"  # obs: cellular neighbourhood cluster

    # provenance
    PROVENANCE = "provenance"  # uns of each modality: platform, reader, pixel size, paths
    PIPELINE = "pipeline"  # uns of the MuData: pipeline parameters, versions, timings

    @staticmethod
    def nhood(label_key: str = "cell_type") -> str:
        """Return the ``uns`` key of the co-localization result for ``label_key`` (squidpy's schema)."""
        return f"{label_key}_nhood_enrichment"

    @staticmethod
    def colors(label_key: str = "cell_type") -> str:
        """Return the ``uns`` key of the colour palette for ``label_key`` (scanpy's convention)."""
        return f"{label_key}_colors"


#: the columns of every differential test of a cohort, after the feature columns (more columns follow them)
DIFFERENTIAL_TEST_COLUMNS = ("condition", "reference", "effect", "ci_low", "ci_high", "p_value", "q_value", "n_samples")
#: the leading columns of the cohort's two differential tables, in this order (more columns follow)
ABUNDANCE_COLUMNS = ("cell_type", *DIFFERENTIAL_TEST_COLUMNS)
COLOCALIZATION_COLUMNS = ("cell_type_a", "cell_type_b", *DIFFERENTIAL_TEST_COLUMNS)
