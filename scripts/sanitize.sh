#!/usr/bin/env bash
# Build fastnorm's C kernels and Cython adapter with -fsanitize=address,undefined in a scratch
# copy of the tree and run the test suite against that build under ASan + UBSan.
#
#   bash scripts/sanitize.sh [pytest args...]      (default: -q tests)
#
# Any out-of-bounds access, use-after-free or undefined behaviour in the kernels aborts the run
# with a report; the script exits non-zero then. Ordinary test failures do not stop the run (no
# -x by default), so one failing test does not hide the rest of the suite from the sanitizers;
# the last line says which of the two happened. Leak checking is off: CPython itself keeps
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
for lib in "$libasan" "$libubsan"; do
    [ -e "$lib" ] || { echo "sanitize.sh: $lib not found (install gcc's sanitizer runtimes)"; exit 1; }
done
export LD_PRELOAD="$libasan:$libubsan"
# abort (SIGABRT, status 134) on any report, UBSan's included, so that a report never looks like
# an ordinary test failure (status 1). allocator_may_return_null: an impossible allocation (tests
# ask for petabytes on purpose) fails as it does without ASan, with NULL -> MemoryError, instead
# of aborting.
export ASAN_OPTIONS=detect_leaks=0:abort_on_error=1:strict_string_checks=1:allocator_may_return_null=1
export UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1:abort_on_error=1

# the sanitized build, not an installed (or editable) fastnorm, must be the one imported: the
# working directory comes first on sys.path for `python -c` and `python -m pytest`
"$python" -c "
import sys, fastnorm
f = fastnorm._kernels.__file__
assert f.startswith('$work/'), f'imported {f}, not the sanitized build in $work'
assert '-fsanitize=address,undefined' in fastnorm.get_config()['cflags']
print('sanitized build:', f)
"

[ $# -gt 0 ] || set -- -q tests
echo "sanitized build in $work; running: pytest $*"
rc=0
# --capture=sys: the sanitizers write their reports to file descriptor 2 from C; with pytest's
# default fd capture a report lands in the capture file and is lost when the process aborts
"$python" -m pytest -p no:cacheprovider --capture=sys "$@" || rc=$?
case $rc in
    0) echo "sanitize.sh: the test suite ran clean under AddressSanitizer + UndefinedBehaviorSanitizer" ;;
    1) echo "sanitize.sh: no sanitizer report, but some tests FAILED (see above)" ;;
    5) echo "sanitize.sh: no tests were collected" ;;
    *) echo "sanitize.sh: pytest ended with status $rc: a sanitizer report or a crash (see above)" ;;
esac
exit $rc
