"""Build script for fastnorm's compiled core.

The C kernels in ``src_c/`` and the Cython adapter ``fastnorm/_kernels.pyx`` are compiled into the
extension ``fastnorm._kernels``; the adapter's helpers (``_runtime``, ``_checks``, ``_layout``) are
extensions of their own. OpenMP is probed by compiling *and running* a tiny program with
``-fopenmp``; without it the build warns loudly and produces a single-threaded library
(``FASTNORM_FAIL_NO_OPENMP=1`` makes that an error). What was built is recorded in
``fastnorm/_build_config.py`` for ``fastnorm.show_config()``.

Environment knobs:
  FASTNORM_FAIL_NO_OPENMP=1   fail instead of building without OpenMP
  FASTNORM_DISABLE_OPENMP=1   build without OpenMP on purpose (for testing the fallback)
  FASTNORM_SANITIZE=1         build with -fsanitize=address,undefined (see scripts/sanitize.sh)
  FASTNORM_EXTRA_CFLAGS       extra compiler flags, appended last
"""
import os
import platform
import re
import shlex
import shutil
import subprocess
import sys
import sysconfig
import tempfile
import textwrap

import numpy as np
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

HERE = os.path.dirname(os.path.abspath(__file__))


def project_version():
    """The version, written once: pyproject.toml's [project] version."""
    with open(os.path.join(HERE, "pyproject.toml"), "rb") as fh:
        text = fh.read()
    try:
        import tomllib
    except ImportError:  # Python < 3.11: the one `version = "..."` line of [project]
        return re.search(rb'^version\s*=\s*"([^"]+)"', text, re.M).group(1).decode()
    return tomllib.loads(text.decode())["project"]["version"]


VERSION = project_version()

OPENMP_PROBE = textwrap.dedent(
    """
    #include <omp.h>
    #include <stdio.h>
    int main(void) {
        int n = 0;
        #pragma omp parallel reduction(+:n)
        n += 1;
        printf("%d\\n", n == omp_get_max_threads() ? n : -1);
        return n > 0 ? 0 : 1;
    }
    """
)


def _compiler():
    cc = os.environ.get("CC") or sysconfig.get_config_var("CC") or "cc"
    return shlex.split(cc)


def probe_openmp():
    """Return (ok, message): compile and run a tiny OpenMP program with the build's compiler."""
    if os.environ.get("FASTNORM_DISABLE_OPENMP") == "1":
        return False, "disabled by FASTNORM_DISABLE_OPENMP=1"
    tmp = tempfile.mkdtemp(prefix="fastnorm_omp_")
    try:
        src, exe = os.path.join(tmp, "probe.c"), os.path.join(tmp, "probe")
        with open(src, "w") as fh:
            fh.write(OPENMP_PROBE)
        cmd = _compiler() + ["-fopenmp", src, "-o", exe]
        try:
            r = subprocess.run(cmd, capture_output=True, text=True, timeout=120)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return False, f"could not run the compiler {cmd[0]!r}: {exc}"
        if r.returncode != 0:
            return False, f"{' '.join(cmd)} failed: {r.stderr.strip()[:500]}"
        r = subprocess.run([exe], capture_output=True, text=True, timeout=60)
        if r.returncode != 0 or r.stdout.strip() in ("", "-1"):
            return False, f"the OpenMP probe compiled but did not run correctly (rc={r.returncode})"
        return True, f"probe ran with {r.stdout.strip()} threads"
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def warn_loudly(msg):
    bar = "!" * 78
    sys.stderr.write(f"\n{bar}\n!! fastnorm WARNING: {msg}\n!! Building a SINGLE-THREADED library.\n"
                     f"!! Set FASTNORM_FAIL_NO_OPENMP=1 to turn this into an error.\n{bar}\n\n")


have_omp, omp_msg = probe_openmp()
if not have_omp:
    if os.environ.get("FASTNORM_FAIL_NO_OPENMP") == "1":
        sys.exit(f"fastnorm: OpenMP is required (FASTNORM_FAIL_NO_OPENMP=1) but unavailable: {omp_msg}")
    warn_loudly(f"OpenMP not available ({omp_msg}).")

# Portable by default: no -march=native. The hot loops are chosen per CPU at run time: AVX2 and
# AVX-512 statistics loops (src_c/fn_simd_impl.h) and target_clones of the normalize loops
# (FN_HOT in src_c/fn_kernels.c).
# -ffp-contract=off: each parallel loop body is compiled twice (threaded and plain, FN_PFOR), and
# a compiler free to fuse a*b+c into an FMA in one copy and not the other would break the
# bitwise thread-count independence; explicit FMA intrinsics are unaffected.
cflags = ["-O3", "-fno-math-errno", "-fno-trapping-math", "-ffp-contract=off", "-Wall", "-Wno-psabi",
          "-Wno-unused-function", "-Wno-unknown-pragmas"]
ldflags = []
if platform.machine() in ("x86_64", "AMD64") and "gcc" in " ".join(_compiler()):
    # generic tuning splits unaligned 256-bit loads in the AVX2/AVX-512 clones of the hot loops
    cflags += ["-mno-avx256-split-unaligned-load", "-mno-avx256-split-unaligned-store"]
if have_omp:
    cflags.append("-fopenmp")
    ldflags.append("-fopenmp")
if os.environ.get("FASTNORM_SANITIZE") == "1":
    san = ["-fsanitize=address,undefined", "-fno-sanitize-recover=undefined",
           "-fno-omit-frame-pointer", "-g"]
    cflags = [f for f in cflags if f != "-O3"] + ["-O1"] + san
    ldflags += san
cflags += shlex.split(os.environ.get("FASTNORM_EXTRA_CFLAGS", ""))

BUILD_CONFIG = os.path.join(HERE, "fastnorm", "_build_config.py")


def write_build_config(path=BUILD_CONFIG):
    with open(path, "w") as fh:
        fh.write("# Generated by setup.py when the extensions are compiled; do not edit.\n")
        fh.write(f"version = {VERSION!r}\n")
        fh.write(f"compiler = {' '.join(_compiler())!r}\n")
        fh.write(f"cflags = {cflags!r}\n")
        fh.write(f"openmp = {have_omp!r}\n")
        fh.write(f"openmp_probe = {omp_msg!r}\n")
        fh.write(f"numpy_build_version = {np.__version__!r}\n")


class BuildExt(build_ext):
    """build_ext that records the build's configuration for fastnorm.show_config() when it
    compiles an extension (or none was recorded yet): not at every setup.py run, which would
    describe flags that no up-to-date extension was rebuilt with."""

    def run(self):
        outputs = [self.get_ext_fullpath(e.name) for e in self.extensions]
        before = [os.path.getmtime(o) if os.path.exists(o) else None for o in outputs]
        super().run()
        after = [os.path.getmtime(o) if os.path.exists(o) else None for o in outputs]
        # beside the extensions it describes: the checkout's, or a wheel's build directory
        target = BUILD_CONFIG if self.inplace else os.path.join(self.build_lib, "fastnorm",
                                                                 "_build_config.py")
        if before != after or not os.path.exists(target):
            os.makedirs(os.path.dirname(target), exist_ok=True)
            write_build_config(target)


if not os.path.exists(BUILD_CONFIG):  # a fresh checkout: build_py may copy it before build_ext
    write_build_config()

src_c = sorted(os.path.join("src_c", f) for f in os.listdir(os.path.join(HERE, "src_c")) if f.endswith(".c"))
headers = sorted(os.path.join("src_c", f) for f in os.listdir(os.path.join(HERE, "src_c")))


def extension(name, c_sources=()):
    """fastnorm.<name> from fastnorm/<name>.pyx (plus C sources), with the build's flags."""
    return Extension(
        f"fastnorm.{name}",
        sources=[f"fastnorm/{name}.pyx"] + list(c_sources),
        include_dirs=["src_c", "fastnorm", np.get_include()],
        define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
        extra_compile_args=cflags,
        extra_link_args=ldflags,
        depends=headers + [os.path.join("fastnorm", "fn_alloc.h")],
    )


# _runtime: thread state; _checks: argument checks; _layout: stride merging; _kernels: the
# adapter, linked with the C kernels (the only module that calls them)
# _alloc: the output cache (a NumPy memory handler, fastnorm/fn_alloc.h); _backward: the backward
# passes (fastnorm.functional's native_*), which reach the kernels through _kernels' tables;
# _registered: the layers' parameter/buffer attribute
extensions = [extension("_runtime"), extension("_alloc"), extension("_checks"),
              extension("_layout"), extension("_kernels", src_c), extension("_backward"),
              extension("_registered")]

setup(
    cmdclass={"build_ext": BuildExt},
    ext_modules=cythonize(
        extensions,
        compiler_directives={"language_level": 3, "boundscheck": False, "wraparound": False,
                             "cdivision": True, "initializedcheck": False, "embedsignature": True},
    ),
)
