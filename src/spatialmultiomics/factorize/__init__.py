"""Joint non-negative matrix factorization of several modalities (DESIGN §3.4).

:class:`JointNMF` is a scikit-learn style estimator on a list of (cells x features) blocks;
:func:`joint_nmf` is its twin on a MuData, storing the factors in the conventional slots (see
:mod:`spatialmultiomics._keys`).
"""

from __future__ import annotations

from spatialmultiomics.factorize._api import JointNMFResult, joint_nmf, project
from spatialmultiomics.factorize._estimator import JointNMF
from spatialmultiomics.factorize._select import KSelection, select_n_factors, store_k_selection

__all__ = ["JointNMF", "JointNMFResult", "KSelection", "joint_nmf", "project", "select_n_factors", "store_k_selection"]
