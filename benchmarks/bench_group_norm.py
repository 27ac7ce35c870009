"""GroupNorm (fastnorm.functional.group_norm) with 32 groups and a per-channel affine, against
plain NumPy and torch CPU. Shapes: benchmarks/conftest.py's CASES["group_norm"]."""
import pytest


@pytest.mark.cases("group_norm")
def test_group_norm(bench_op, case, peer):
    bench_op(case, peer)
