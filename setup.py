"""Declares the compiled core only; all metadata lives in pyproject.toml."""

from Cython.Build import cythonize
from setuptools import Extension, setup

extensions = [
    Extension(
        "jobengine._core",
        sources=["csrc/_core.pyx", "csrc/heap.c", "csrc/ring.c"],
        include_dirs=["csrc"],
        extra_compile_args=["-O3", "-std=gnu11"],
    ),
]

setup(ext_modules=cythonize(extensions, compiler_directives={"language_level": "3"}))
