"""Build script: compiles every Cython module under katzenpost/_core.

Each ``_core/<name>.pyx`` becomes the extension ``katzenpost._core.<name>``. Hand-written C
helpers that a module needs are listed in ``C_HELPERS`` (they sit beside the .pyx). All
extensions are built with -O3 and linked against the system OpenSSL libcrypto.

Set ``KATZENPOST_EXTENSIONS=aez,sphinx`` to build only some modules (handy while developing
one module; a normal install always builds all of them).
"""
import os
from pathlib import Path

import numpy
from Cython.Build import cythonize
from setuptools import Extension, setup

CORE = Path("katzenpost") / "_core"

# Hand-written C sources compiled into a given extension (beside the .pyx in _core/).
C_HELPERS = {
    "aez": ["aez_impl.c"],
    "sphinx": ["aez_impl.c", "sphinx_impl.c", "x25519_mb_impl.c"],
    "replay": ["replay_impl.c"],
    "wheel": ["wheel_impl.c"],
}

COMPILE_ARGS = ["-O3", "-fno-strict-aliasing", "-Wno-unused-function"]


def core_extensions():
    only = {n for n in os.environ.get("KATZENPOST_EXTENSIONS", "").split(",") if n}
    exts = []
    for pyx in sorted(CORE.glob("*.pyx")):
        name = pyx.stem
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


setup(
    ext_modules=cythonize(
        core_extensions(),
        language_level=3,
        compiler_directives={"embedsignature": True},
    ),
)
