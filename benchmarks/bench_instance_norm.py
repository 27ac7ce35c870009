"""InstanceNorm (fastnorm.functional.instance_norm) without affine or running statistics, as
../shared/bench/anchors.py calls it, against plain NumPy and torch CPU. Shapes:
benchmarks/conftest.py's CASES["instance_norm"]."""
import pytest


@pytest.mark.cases("instance_norm")
def test_instance_norm(bench_op, case, peer):
    bench_op(case, peer)
