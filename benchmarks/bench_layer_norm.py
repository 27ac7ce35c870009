"""LayerNorm (fastnorm.functional.layer_norm) over the last axis with an elementwise affine,
against plain NumPy and torch CPU. Shapes: benchmarks/conftest.py's CASES["layer_norm"]."""
import pytest


@pytest.mark.cases("layer_norm")
def test_layer_norm(bench_op, case, peer):
    bench_op(case, peer)
