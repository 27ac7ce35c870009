"""BatchNorm (fastnorm.functional.batch_norm) in training mode (batch statistics, running
statistics updated in place) and in eval mode (running statistics), against plain NumPy and
torch CPU. Shapes: benchmarks/conftest.py's CASES["batch_norm[train]"] / ["batch_norm[eval]"]."""
import pytest


@pytest.mark.cases("batch_norm[train]")
def test_batch_norm_train(bench_op, case, peer):
    bench_op(case, peer)


@pytest.mark.cases("batch_norm[eval]")
def test_batch_norm_eval(bench_op, case, peer):
    bench_op(case, peer)
