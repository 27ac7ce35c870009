#!/usr/bin/env bash
# Build fastnorm's C kernels and Cython adapter with -fsanitize=address,undefined in a scratch
# copy of the tree and run the test suite against that build under ASan + UBSan.
#
#   bash scripts/sanitize.sh [pytest args...]      (default: -q -x tests)
#
# Any out-of-bounds access, use-after-free or undefined behaviour in the kernels aborts the run
# with a report; the script exits non-zero then. Leak checking is off: CPython itself keeps
# allocations alive until exit, which LeakSanitizer would report.
set -euo pipefail
src=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d /tmp/fastnorm-asan.XXXXXX)
trap 'rm -rf "$work"' EXIT
python=${PYTHON:-python}

# copy the sources git knows about (tracked and untracked, not ignored): no stale build products
(cd "$src" && git ls-files -co --exclude-standard -z) | (cd "$src" && xargs -0 cp --parents -t "$work")
cd "$work"
FASTNORM_SANITIZE=1 "$python" setup.py build_ext --inplace > build.log 2>&1 || { cat build.log; exit 1; }
grep -q -- "-fsanitize=address,undefined" fastnorm/_build_config.py

libasan=$(gcc -print-file-name=libasan.so)
libubsan=$(gcc -print-file-name=libubsan.so)
export LD_PRELOAD="$libasan:$libubsan"
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1
[ $# -gt 0 ] || set -- -q -x tests
echo "sanitized build in $work; running: pytest $*"
"$python" -m pytest -p no:cacheprovider "$@"
echo "sanitize.sh: the test suite ran clean under AddressSanitizer + UndefinedBehaviorSanitizer"
