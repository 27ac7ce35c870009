"""The docstring examples of fastnorm.functional, every module of fastnorm.modules and
fastnorm.reference run as doctests: every example must pass."""
import doctest
import importlib
import pkgutil

import pytest

import fastnorm
import fastnorm.modules
import fastnorm.utils

MODULES = (["fastnorm.functional", "fastnorm.reference", "fastnorm.modules", "fastnorm.utils",
            "fastnorm._moments", "fastnorm.dask"]
           + sorted(f"{pkg.__name__}.{m.name}" for pkg in (fastnorm.modules, fastnorm.utils)
                    for m in pkgutil.iter_modules(pkg.__path__)))
# modules whose docstrings are expected to hold examples (the others are checked if they get some)
WITH_EXAMPLES = {"fastnorm.functional", "fastnorm._moments", "fastnorm.dask",
                 "fastnorm.modules.batchnorm", "fastnorm.modules.instancenorm",
                 "fastnorm.modules.normalization", "fastnorm.modules.switchnorm",
                 "fastnorm.utils.fusion"}


def test_every_module_file_is_listed():
    assert {"fastnorm.modules.batchnorm", "fastnorm.modules.instancenorm",
            "fastnorm.modules.normalization", "fastnorm.modules.module",
            "fastnorm.utils.fusion"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    if name == "fastnorm.dask":
        pytest.importorskip("dask.array")  # the optional extra
    module = importlib.import_module(name)
    finder = doctest.DocTestFinder(exclude_empty=True)
    runner = doctest.DocTestRunner(optionflags=doctest.ELLIPSIS | doctest.NORMALIZE_WHITESPACE)
    tests = finder.find(module, name)
    failures = []
    for test in tests:
        result = runner.run(test, out=failures.append)
        assert result.attempted == len(test.examples)
    summary = runner.summarize(verbose=False)
    assert summary.failed == 0, "".join(failures)
    if name in WITH_EXAMPLES:
        assert summary.attempted > 0, f"{name}: no docstring examples found"


def test_every_public_class_and_function_has_an_example():
    """Each layer class, functional op and utility documents itself with at least one example."""
    finder = doctest.DocTestFinder()
    names = [f"fastnorm.functional.{f}" for f in fastnorm.functional.__all__]
    names += [f"fastnorm.{c}" for c in fastnorm.modules.__all__ if c != "Module"]
    names += [f"fastnorm.utils.{f}" for f in fastnorm.utils.__all__]
    names += ["fastnorm.moments", "fastnorm.Moments", "fastnorm.Moments.from_array",
              "fastnorm.Moments.merge"]
    for qual in names:
        obj = fastnorm
        for part in qual.split(".")[1:]:
            obj = getattr(obj, part)
        tests = finder.find(obj, qual, globs={})
        own = [t for t in tests if t.name == qual]
        assert own and own[0].examples, f"{qual} has no docstring example"
