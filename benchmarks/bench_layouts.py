"""Channels-last statistics against the row kernel: the per-(n, c) moments of an NHWC array
(``fastnorm._kernels.instance_moments`` on the column layout: tiles of rows across the channels,
merged down the row blocks) must take at most 1.25x the time of the same moments of the NCHW
array (the row kernel's contiguous runs), one thread, i.e. at least 0.8x its throughput. Shapes
from CNNs and diffusion models, in cache and in memory. The script ``kernel_checks.py`` prints
the same ratios. Speed assertions by conftest.py's ``check_ratio``; under --benchmark-disable
each case is built, checked and skipped."""
import dataclasses

import numpy as np
import pytest

import fastnorm
from fastnorm import _kernels

from conftest import Case

SHAPES = [(1, 256, 32, 32), (8, 128, 56, 56), (8, 256, 56, 56), (32, 256, 56, 56),
          (8, 1024, 14, 14), (2, 640, 32, 32)]
FLOOR = 0.8  # NCHW time / NHWC time


@pytest.fixture
def one_thread():
    n = fastnorm.get_num_threads()
    fastnorm.set_num_threads(1)
    yield
    fastnorm.set_num_threads(n)


@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_channels_last_statistics(shape, one_thread, check_ratio):
    case = Case("instance_moments", shape, layout="channels_last")
    xl = case.input()
    x = np.ascontiguousarray(xl)
    got, want = _kernels.instance_moments(xl), _kernels.instance_moments(x)
    for g, w in zip(got, want):
        np.testing.assert_allclose(g, w, rtol=1e-10, atol=1e-12)
    check_ratio(dataclasses.replace(case, op="moments NHWC"), lambda: _kernels.instance_moments(xl),
                lambda: _kernels.instance_moments(x), FLOOR, what="NCHW moments")
