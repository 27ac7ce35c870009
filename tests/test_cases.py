"""fastnorm/_cases.py, the one home of the benchmark shapes, calls, timing helper and tolerances,
and the `python -m fastnorm` call builders made from it; the version written once."""
import pathlib
import re

import numpy as np
import pytest

import fastnorm
from fastnorm import _cases
from fastnorm import __main__ as cli


def test_version_is_written_once():
    text = (pathlib.Path(__file__).parents[1] / "pyproject.toml").read_text()
    pyproject = re.search(r'^version\s*=\s*"([^"]+)"', text, re.M).group(1)
    assert fastnorm.__version__ == pyproject
    setup = (pathlib.Path(__file__).parents[1] / "setup.py").read_text()
    assert pyproject not in setup, "setup.py writes the version again: it reads pyproject.toml"


def test_tolerances_are_the_documented_promise():
    """TOL is shared by every accuracy assertion: it must stay what the README promises."""
    assert _cases.TOL == {np.dtype(np.float32): 5e-5, np.dtype(np.float64): 1e-9}


def test_make_input_layouts():
    x = _cases.make_input((2, 3, 4, 5), "float32")
    y = _cases.make_input((2, 3, 4, 5), "float32", "channels_last")
    assert x.dtype == y.dtype == np.float32 and x.shape == y.shape == (2, 3, 4, 5)
    assert x.flags.c_contiguous and np.argmin(y.strides) == 1  # channels innermost
    assert abs(float(x.mean()) - 1) < 1 and 2 < float(x.std()) < 4  # 3 * N(0, 1) + 1
    with pytest.raises(ValueError, match="unknown layout"):
        _cases.make_input((2, 3), layout="nhwc")


@pytest.mark.parametrize("name", sorted(_cases.OPS))
def test_cli_calls_match_reference_and_torch(name, request):
    """`python -m fastnorm`'s three calls of each case compute the same thing."""
    shape = (4, 32, 3, 5) if name != "bn_eval" else (1, 32, 3, 5)
    x = _cases.make_input(shape, "float32")
    try:
        torch = request.getfixturevalue("torch")
    except pytest.skip.Exception:
        torch = None
    fast, slow, peer = cli.make_case(name, x, torch)
    want = slow()
    tol = _cases.TOL[np.dtype(np.float32)]
    assert fast().dtype == np.float32
    assert np.abs(fast() - want).max() <= tol
    out = np.empty_like(x)
    assert fast(out=out) is out and np.abs(out - want).max() <= tol
    assert slow(dtype=np.float32).dtype == np.float32
    if torch is not None:
        assert np.abs(peer().numpy() - want).max() <= 1e-4
    assert cli.label(name, shape)


def test_median_time_measures():
    calls = []
    t = _cases.median_time(lambda: calls.append(1), rounds=3, budget=0.003)
    assert 0 < t < 0.01 and len(calls) >= 2 + 3
