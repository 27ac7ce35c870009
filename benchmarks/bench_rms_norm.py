"""RMSNorm (fastnorm.functional.rms_norm) over the last axis with a weight and torch's default
eps, against plain NumPy and torch CPU. No anchor of its own: the layer_norm anchor shapes.
Shapes: benchmarks/conftest.py's CASES["rms_norm"]."""
import pytest


@pytest.mark.cases("rms_norm")
def test_rms_norm(bench_op, case, peer):
    bench_op(case, peer)
