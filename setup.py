"""Build script: compiles every Cython module under katzenpost/_core.

Each ``_core/<name>.pyx`` becomes the extension ``katzenpost._core.<name>``. Hand-written C
helpers that a module needs are listed in ``C_HELPERS`` (they sit beside the .pyx). All
extensions are built with -O3 and linked against the system OpenSSL libcrypto.

Set ``KATZENPOST_EXTENSIONS=aez,sphinx`` to build only some modules (handy while developing
one module; a normal install always builds all of them).

Benchmark and test stand-ins (``IN_PLACE_ONLY``, sources under ``bench/``) are compiled only by
in-place builds (``pip install -e .``, ``setup.py build_ext --inplace``), which the tests and
benchmarks run from; a wheel never carries them.
"""
import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup
from setuptools.command.build_ext import build_ext

CORE = Path("katzenpost") / "_core"

# Hand-written C sources compiled into a given extension (beside the .pyx in _core/).
C_HELPERS = {
    "aez": ["aez_impl.c"],
    "sphinx": ["aez_impl.c", "sphinx_impl.c", "x25519_mb_impl.c"],
    "replay": ["replay_impl.c"],
    "wheel": ["wheel_impl.c"],
}

# Stand-ins for benchmarks and tests: module name -> source (importable as katzenpost._core.<name>
# from an in-place build, never installed by a wheel).
IN_PLACE_ONLY = {"unwrap_standin": Path("bench") / "unwrap_standin.pyx"}

COMPILE_ARGS = ["-O3", "-fno-strict-aliasing", "-Wno-unused-function"]


def core_extensions():
    only = {n for n in os.environ.get("KATZENPOST_EXTENSIONS", "").split(",") if n}
    sources = {pyx.stem: pyx for pyx in sorted(CORE.glob("*.pyx"))}
    sources.update(IN_PLACE_ONLY)
    exts = []
    for name, pyx in sources.items():
        if only and name not in only:
            continue
        helpers = [str(CORE / c) for c in C_HELPERS.get(name, []) if (CORE / c).exists()]
        exts.append(
            Extension(
                f"katzenpost._core.{name}",
                sources=[str(pyx)] + helpers,
                include_dirs=[str(CORE), numpy.get_include()],
                libraries=["crypto"],
                extra_compile_args=COMPILE_ARGS,
                define_macros=[("NPY_NO_DEPRECATED_API", "NPY_1_7_API_VERSION")],
            )
        )
    return exts


class BuildExtensions(build_ext):
    """build_ext that leaves the stand-ins out of every build that is not in place."""

    def run(self):
        if not (self.inplace or getattr(self, "editable_mode", False)):
            self.extensions = [e for e in self.extensions
                               if e.name.rsplit(".", 1)[-1] not in IN_PLACE_ONLY]
        super().run()


setup(
    cmdclass={"build_ext": BuildExtensions},
    ext_modules=cythonize(
        core_extensions(),
        language_level=3,
        compiler_directives={"embedsignature": True},
    ),
)
