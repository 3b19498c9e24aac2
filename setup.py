"""Build of conv3dt's Cython kernels, with OpenMP where the compiler supports it.

Environment variables:
  CONV3DT_NO_OPENMP=1   build without OpenMP (kernels then run on one thread)
  CONV3DT_DEBUG=1       bounds-checked kernels compiled with AddressSanitizer and UBSan
"""

import glob
import os
import shutil
import subprocess
import sys
import tempfile
import warnings

from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext


def _flag(name):
    return os.environ.get(name, "").strip().lower() in ("1", "true", "yes", "on")


def _openmp_flags(compiler):
    """(compile, link) flags enabling OpenMP, or None when this compiler lacks it."""
    if compiler.compiler_type == "msvc":
        return ["/openmp"], []
    candidates = [(["-fopenmp"], ["-fopenmp"])]
    if sys.platform == "darwin":
        candidates.append((["-Xpreprocessor", "-fopenmp"], ["-lomp"]))
    tmp = tempfile.mkdtemp()
    try:
        src = os.path.join(tmp, "check_openmp.c")
        with open(src, "w") as f:
            f.write("#include <omp.h>\nint main(void) { return omp_get_max_threads() < 1; }\n")
        for cflags, lflags in candidates:
            try:
                objects = compiler.compile([src], output_dir=tmp, extra_postargs=cflags)
                compiler.link_executable(objects, "check_openmp", output_dir=tmp,
                                         extra_postargs=lflags)
                return cflags, lflags
            except Exception:  # any compile or link error means: not this way
                continue
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return None


class BuildExt(build_ext):
    def build_extensions(self):
        flags = None if _flag("CONV3DT_NO_OPENMP") else _openmp_flags(self.compiler)
        if flags is None and not _flag("CONV3DT_NO_OPENMP"):
            warnings.warn("conv3dt: the compiler does not support OpenMP; the kernels will "
                          "run single-threaded")
        msvc = self.compiler.compiler_type == "msvc"
        for ext in self.extensions:
            if flags is not None:
                ext.extra_compile_args += flags[0]
                ext.extra_link_args += flags[1]
            if _flag("CONV3DT_DEBUG") and not msvc:
                sanitize = ["-fsanitize=address,undefined", "-fno-omit-frame-pointer", "-g", "-O1"]
                ext.extra_compile_args += sanitize
                ext.extra_link_args += sanitize
            elif not msvc:
                ext.extra_compile_args += ["-O3"]
        super().build_extensions()


DEBUG = _flag("CONV3DT_DEBUG")
directives = {"language_level": 3}
if DEBUG:
    directives.update(boundscheck=True, wraparound=True, initializedcheck=True)

# The kernels, and the microkernels of each instruction-set variant with the registry that
# picks one at run time (conv3dt/kernels/isa.h). A variant's file compiles its functions
# for its own target (function attributes), so the build needs no -march flag; on other
# architectures the x86 variants compile to nothing and the generic one remains.
KERNEL_SOURCES = ["conv3dt/_kernels.pyx"] + [
    f"conv3dt/kernels/{name}.c" for name in ("generic", "avx2", "avx512", "registry")
]
KERNEL_HEADERS = [f"conv3dt/kernels/{name}.h" for name in ("isa", "microkernels", "memops")]
CYTHON_SOURCES = ["conv3dt/_kernels.pyx"] + sorted(
    glob.glob("conv3dt/_kernels*.pxd") + glob.glob("conv3dt/_kernels*.pxi"))
GENERATED_C = "conv3dt/_kernels.c"


def _generated_c_is_current():
    """Whether the C that Cython generated from the kernels is newer than every Cython source.

    Cython's own check also counts its installed headers, which pip's isolated build
    environment installs afresh for every build, so it would regenerate the C (and the
    build recompile it) on every `pip install .`; only the project's sources can make it
    stale. Debug builds never use it (their C is generated elsewhere, see below).
    """
    if DEBUG or not os.path.exists(GENERATED_C):
        return False
    newest_source = max(os.path.getmtime(path) for path in CYTHON_SOURCES)
    return os.path.getmtime(GENERATED_C) >= newest_source


extensions = [Extension("conv3dt._kernels", KERNEL_SOURCES, include_dirs=["conv3dt"],
                        depends=KERNEL_HEADERS + CYTHON_SOURCES[1:])]
if _generated_c_is_current():
    extensions[0].sources[0] = GENERATED_C
    ext_modules = extensions
else:
    from Cython.Build import cythonize

    # A debug build's C (bounds checks on) goes to a folder of its own, so that a later
    # release build never compiles it.
    ext_modules = cythonize(extensions, compiler_directives=directives, force=True,
                            build_dir="build/cython-debug" if DEBUG else None)

setup(
    ext_modules=ext_modules,
    cmdclass={"build_ext": BuildExt},
)
