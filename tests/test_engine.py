"""The engine of run_pipeline: validation (one-line errors), the Dask tiles route of the spatial stage (equal to the
in-memory graph route), and the engine recorded in ``uns`` and the report."""

from __future__ import annotations

import socket
import sys

import anndata as ad
import numpy as np
import pandas as pd
import pytest

import spatialmultiomics as smo
from spatialmultiomics import _engine
from spatialmultiomics._engine import ENGINE_UNS, check_engine, spatial_stage_tiled, start_engine
from spatialmultiomics._errors import InputError
from spatialmultiomics._keys import Keys

pytest.importorskip("distributed")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"backend": "spark"}, r"backend \(--backend\) must be one of \['numpy', 'dask', 'torch'\], got 'spark'"),
        ({"backend": "numpy", "scheduler": "local"}, "is for backend='dask', but backend='numpy'"),
        ({"backend": "dask", "scheduler": "http//nowhere"}, "must be 'local'.*got 'http//nowhere'"),
        ({"backend": "numpy", "device": "cuda"}, "runs the factorization with PyTorch, but backend='numpy'"),
        ({"backend": "torch", "device": "tpu"}, r"device \(--device\) must be one of \['cpu', 'cuda'\]"),
        ({"n_jobs": 0}, r"n_jobs \(--n-jobs\) must be a positive integer or -1"),
    ],
)
def test_bad_engine_choices_are_one_line_input_errors(kwargs, message) -> None:
    with pytest.raises(InputError, match=message) as err:
        check_engine(**kwargs)
    assert "\n" not in str(err.value)


@pytest.mark.parametrize(
    ("backend", "module", "extra"), [("dask", "dask.distributed", "dask"), ("torch", "torch", "torch")]
)
def test_missing_extra_names_the_pip_extra(monkeypatch, backend, module, extra) -> None:
    monkeypatch.setitem(sys.modules, module, None)  # `import module` now raises ImportError
    with pytest.raises(InputError, match=rf"pip install 'spatialmultiomics\[{extra}\]'"):
        check_engine(backend)


def test_cuda_without_gpu_is_refused() -> None:
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("a CUDA GPU is present")
    with pytest.raises(InputError, match=r"device \(--device\)='cuda': PyTorch .* sees no CUDA GPU"):
        check_engine("torch", device="cuda")
    assert check_engine("torch").device == "cpu"  # the default falls back to the CPU only when none was asked for


def test_unreachable_scheduler_fails_fast(monkeypatch) -> None:
    monkeypatch.setattr(_engine, "CONNECT_TIMEOUT_S", 0.5)
    address = f"tcp://127.0.0.1:{_free_port()}"
    spec = check_engine("dask", scheduler=address.removeprefix("tcp://"))  # host:port means tcp://host:port
    assert spec.scheduler == address
    with pytest.raises(InputError, match=rf"scheduler \(--scheduler\)='{address}': no Dask scheduler answered"):
        start_engine(spec)


def _labelled(seed: int = 0) -> ad.AnnData:
    """Three FOVs of random cells with planted clusters of type 'B' and some 'Unknown' calls."""
    rng = np.random.default_rng(seed)
    n = 900
    xy = rng.uniform(0, 600, size=(n, 2))
    types = rng.choice(["T", "B", "tumour", "Unknown"], size=n, p=[0.3, 0.2, 0.4, 0.1])
    types[(xy[:, 0] < 200) & (xy[:, 1] < 250)] = "B"  # a planted B-cell aggregate
    adata = ad.AnnData(obsm={Keys.SPATIAL: xy})
    adata.obs_names = [f"c{i}" for i in range(n)]
    adata.obs[Keys.CELL_TYPE] = pd.Categorical(types)
    adata.obs[Keys.FOV] = pd.Categorical(np.array(["f1", "f2", "f3"])[(xy[:, 0] // 200).astype(int)])  # 3 strips
    return adata


def test_tiled_spatial_stage_equals_the_graph_route() -> None:
    graph_route, tiled_route = _labelled(), _labelled()
    smo.spatial.spatial_neighbors(graph_route, method="radius", radius=40.0)
    smo.spatial.niche_composition(graph_route, label_key=Keys.CELL_TYPE)
    smo.spatial.colocalization(graph_route, label_key=Keys.CELL_TYPE, exclude=("Unknown",), seed=0)
    assert spatial_stage_tiled(
        tiled_route,
        radius=40.0,
        expected="exact",
        seed=0,
        exclude=("Unknown",),
        label_key=Keys.CELL_TYPE,
        tile_size=100.0,  # 6 x 6 tiles over three FOVs: most neighbourhoods cross a tile edge
    )
    assert tiled_route.uns[Keys.GRAPH_UNS]["params"]["n_tiles"] >= 30
    assert Keys.GRAPH not in tiled_route.obsp  # the whole graph is never built
    np.testing.assert_allclose(tiled_route.obsm[Keys.NICHE_COMPOSITION], graph_route.obsm[Keys.NICHE_COMPOSITION])
    np.testing.assert_array_equal(tiled_route.obs[Keys.N_NEIGHBORS], graph_route.obs[Keys.N_NEIGHBORS])
    np.testing.assert_array_equal(tiled_route.obs[Keys.NICHE_TYPE], graph_route.obs[Keys.NICHE_TYPE])
    a = smo.spatial.colocalization_table(tiled_route)
    b = smo.spatial.colocalization_table(graph_route)
    assert a["cell_type_pair"].tolist() == b["cell_type_pair"].tolist()
    assert not a["cell_type_pair"].str.contains("Unknown").any()
    pd.testing.assert_frame_equal(a, b, rtol=1e-10, atol=1e-12)
    # the planted aggregate is found: B next to B far above random mixing
    assert a.set_index("cell_type_pair").loc["B|B", "z_score"] > 5


def test_dask_pipeline_records_its_engine(tmp_path) -> None:
    mdata = smo.datasets.paper_benchmark(seed=0)
    kw = {"n_factors": 4, "markers": dict(mdata.uns["markers"]), "annotation_method": "auto"}
    base = smo.run_pipeline(mdata["rna"], mdata["protein"], **kw)
    assert base.mdata.uns[ENGINE_UNS]["backend"] == "numpy"
    on_dask = smo.run_pipeline(
        mdata["rna"], mdata["protein"], backend="dask", n_jobs=2, output_dir=tmp_path / "d", figures=False, **kw
    )
    engine = on_dask.mdata.uns[ENGINE_UNS]
    assert engine["backend"] == "dask"
    assert engine["scheduler"].startswith("threads")
    assert engine["threads"] == 2
    assert on_dask.mdata.uns[Keys.PIPELINE]["params"]["backend"] == "dask"
    assert Keys.GRAPH not in on_dask.mdata.obsp  # spatial statistics came from the tiles
    agreement = (on_dask.shared_labels["cell_type"] == base.shared_labels["cell_type"]).mean()
    assert agreement >= 0.99
    np.testing.assert_allclose(on_dask.H_shared, base.H_shared, rtol=1e-3, atol=1e-4)
    pd.testing.assert_frame_equal(on_dask.co_localization, base.co_localization, rtol=1e-6, atol=1e-9)
    html = (tmp_path / "d" / "report.html").read_text()
    assert "<h3>Engine</h3>" in html
    assert "threads (local threaded scheduler)" in html


def test_active_client_is_used_and_left_open(client) -> None:  # last: the module's client stays up until the end
    engine = start_engine(check_engine("dask"))
    assert engine.client is client
    info = engine.describe()
    assert info["scheduler"] == "active client"
    assert info["workers"] == 2
    assert info["threads"] == 2
    engine.close()
    assert client.status == "running"
