from __future__ import annotations

from collections.abc import Callable

import numpy as np
import pytest


def _jittered_grid(n: int, rng: np.random.Generator, spacing: float = 12.0) -> np.ndarray:
    """``n`` cell centres on a jittered square grid (~``spacing`` µm apart), like a real section."""
    m = int(np.ceil(np.sqrt(n / 0.95)))
    grid = np.stack(np.meshgrid(np.arange(m), np.arange(m)), axis=-1).reshape(-1, 2)
    pick = np.sort(rng.choice(grid.shape[0], size=n, replace=False))
    return (grid[pick] + 0.5 + rng.uniform(-0.35, 0.35, size=(n, 2))) * spacing


def _disk_jitter(n: int, radius: float, rng: np.random.Generator) -> np.ndarray:
    """Displacements uniform in a disk of ``radius`` µm (every cell moves by at most ``radius``)."""
    ang = rng.uniform(0, 2 * np.pi, n)
    r = radius * np.sqrt(rng.random(n))
    return np.c_[r * np.cos(ang), r * np.sin(ang)]


@pytest.fixture
def jittered_grid() -> Callable[..., np.ndarray]:
    return _jittered_grid


@pytest.fixture
def disk_jitter() -> Callable[..., np.ndarray]:
    return _disk_jitter


@pytest.fixture
def hex_spots() -> Callable[..., np.ndarray]:
    """Visium-like spot centres on a hexagonal lattice (:func:`smo.datasets.hex_lattice`)."""
    from spatialmultiomics.datasets import hex_lattice

    return hex_lattice
