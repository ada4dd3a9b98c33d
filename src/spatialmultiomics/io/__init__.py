"""Reading inputs and writing results."""

from spatialmultiomics.io._labelled import read_labelled_table
from spatialmultiomics.io._platforms import PLATFORMS, normalize_platform
from spatialmultiomics.io._read import read, read_h5ad
from spatialmultiomics.io._table import read_table
from spatialmultiomics.io._write import atomic_output_dir, check_output_dir, write_h5mu, write_results

__all__ = [
    "PLATFORMS",
    "atomic_output_dir",
    "check_output_dir",
    "normalize_platform",
    "read",
    "read_h5ad",
    "read_labelled_table",
    "read_table",
    "write_h5mu",
    "write_results",
]
