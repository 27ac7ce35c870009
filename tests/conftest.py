"""Shared pytest configuration: --runslow for tests marked slow, a `torch` fixture that skips
when PyTorch is not installed, and the thread count restored after every test."""
import pytest

import fastnorm


def pytest_addoption(parser):
    parser.addoption("--runslow", action="store_true", default=False,
                     help="also run tests marked slow (large memory, long)")


def pytest_collection_modifyitems(config, items):
    if config.getoption("--runslow"):
        return
    skip = pytest.mark.skip(reason="slow: run with --runslow")
    for item in items:
        if "slow" in item.keywords:
            item.add_marker(skip)


@pytest.fixture
def torch():
    """PyTorch, or skip: parity tests run where torch is installed (CI installs it)."""
    return pytest.importorskip("torch")


@pytest.fixture(autouse=True)
def _restore_threads():
    yield
    fastnorm.set_num_threads(None)
    assert fastnorm.get_num_threads() >= 1
