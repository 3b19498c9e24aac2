#!/usr/bin/env bash
# Memory-safety check: build the kernels with CONV3DT_DEBUG=1 (Cython boundscheck and
# wraparound, -fsanitize=address,undefined) in a temporary copy of the repository, so the
# in-place build stays untouched, and run the kernel tests under it with the ASan runtime
# preloaded, once per instruction-set variant the CPU runs. Any sanitizer report fails the
# run.
#   usage: tests/debug_build.sh [extra pytest args]
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
start=$(date +%s)

# Sources only: no build outputs from the in-place build.
tar -C "$root" --exclude=.git --exclude='build' --exclude='*.so' --exclude='conv3dt/_kernels.c' \
    --exclude='__pycache__' --exclude='.pytest_cache' --exclude='.hypothesis' -cf - . \
    | tar -C "$work" -xf -
(cd "$work" && CONV3DT_DEBUG=1 python setup.py -q build_ext --inplace >"$work/build.log" 2>&1) \
    || { cat "$work/build.log"; echo "debug build failed"; exit 1; }

so=$(ls "$work"/conv3dt/_kernels*.so)
ldd "$so" | grep libasan >/dev/null || { echo "the debug build is not linked with AddressSanitizer"; exit 1; }
asan=$(gcc -print-file-name=libasan.so)
ubsan=$(gcc -print-file-name=libubsan.so)
[ -f "$asan" ] || { echo "libasan.so not found (gcc -print-file-name)"; exit 1; }
report="$work/sanitizer"
# Leak detection off: CPython itself keeps memory alive at exit. halt_on_error makes any
# report fatal; reports also go to files checked below.
export ASAN_OPTIONS="detect_leaks=0:halt_on_error=1:abort_on_error=1:log_path=$report.asan"
export UBSAN_OPTIONS="halt_on_error=1:print_stacktrace=1:log_path=$report.ubsan"
export LD_PRELOAD="$asan${ubsan:+:$ubsan}"
export PYTHONPATH="$work"
status=0
# Once per instruction-set variant this CPU runs (each has its own microkernels).
variants=$(cd "$work" && python -c \
    "import conv3dt; print(' '.join(conv3dt.available_isas()))")
for isa in $variants; do
    echo "== CONV3DT_ISA=$isa"
    (cd "$work" && CONV3DT_ISA=$isa python -m pytest -q -p no:cacheprovider \
        tests/test_golden.py tests/test_threads.py tests/test_random_reference.py \
        tests/test_reliability_values.py tests/test_reliability_sizes.py tests/test_tiling.py \
        tests/test_crop_exact.py tests/test_isa.py -m "not slow" "$@") || status=$?
done
unset LD_PRELOAD
if ls "$report".* >/dev/null 2>&1; then
    echo "sanitizer reports:"; cat "$report".*; status=1
fi
echo "debug build + sanitizer run: $(( $(date +%s) - start )) s, status $status"
exit $status
