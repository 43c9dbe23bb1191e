"""jobengine: register jobs, schedule them, run them on a pool of worker processes."""

from __future__ import annotations

import importlib

__version__ = "0.1.0"


def _load_core():
    """Import the compiled core, or explain how to build it (there is no fallback)."""
    try:
        return importlib.import_module("jobengine._core")
    except ImportError as exc:
        raise ImportError(
            "jobengine's compiled core (jobengine._core) is not built; install the "
            "project with `pip install .` (needs a C compiler) or build it in place "
            "with `python setup.py build_ext --inplace`"
        ) from exc


_load_core()

__all__ = ["__version__"]
