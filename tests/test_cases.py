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


def test_random_cases_are_repeatable_real_model_calls():
    """families.py --random: the same seed draws the same cases, another seed others; every
    case is an op of OPS on a shape it takes, under the 128 MB cap, in a layout make_input
    knows, and the fastnorm call of each matches the reference."""
    a, b = _cases.random_cases(40, seed=3), _cases.random_cases(40, seed=3)
    assert a == b and a != _cases.random_cases(40, seed=4) and len(a) == 40
    assert {name for name, _, _ in a} == set(_cases.OPS)  # 40 draws reach all six ops
    assert all(8 * int(np.prod(shape)) <= 128 * 2**20  # --f64's draws: under 128 MB too
               for _, shape, _ in _cases.random_cases(60, seed=3, itemsize=8))
    for name, shape, layout in a:
        assert 4 * int(np.prod(shape)) <= 128 * 2**20
        assert layout == "contiguous" or (name not in ("ln", "rms", "in") and len(shape) == 4)
        if name in ("ln", "rms"):
            assert len(shape) in (2, 3)
        else:
            assert len(shape) == 4 and (name != "gn32" or shape[1] % 32 == 0)
    for name, shape, layout in a[:8]:
        small = shape[:1] + tuple(min(v, 9) for v in shape[1:]) if name not in ("ln", "rms") \
            else shape[:-1] + (min(shape[-1], 384),)
        if name == "gn32":
            small = small[:1] + (64,) + small[2:]
        x = _cases.make_input(small, "float32", layout)
        op, mode = _cases.OPS[name]
        kw = _cases.op_kwargs(op, mode, x)
        got = getattr(fastnorm.functional, op)(x, **kw)
        want = getattr(fastnorm.reference, op)(x, **kw)
        assert got.shape == x.shape and np.abs(got - want).max() <= _cases.TOL[x.dtype]


@pytest.mark.parametrize("bad", ["0", "-3", "abc"])
def test_cli_refuses_a_thread_count_below_one_as_a_usage_error(bad, capsys):
    with pytest.raises(SystemExit) as e:
        cli.main(["--quick", "--threads", bad])
    assert e.value.code == 2
    assert f"argument --threads: invalid positive_int value: '{bad}'" in capsys.readouterr().err


def test_subpackages_after_import_fastnorm():
    """fastnorm.utils after ``import fastnorm`` alone, as torch.nn.utils after ``import torch``;
    fastnorm.dask on first use (its dask import is optional)."""
    import subprocess
    import sys
    code = ("import fastnorm; print(fastnorm.utils.fusion.fuse_conv_bn_weights.__name__, "
            "fastnorm.utils.SpectralNorm.__name__)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.split() == ["fuse_conv_bn_weights", "SpectralNorm"], r.stderr
    pytest.importorskip("dask")
    r = subprocess.run([sys.executable, "-c", "import fastnorm; print(fastnorm.dask.__name__)"],
                       capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and r.stdout.strip() == "fastnorm.dask", r.stderr
    with pytest.raises(AttributeError, match="no attribute 'nonesuch'"):
        fastnorm.nonesuch
