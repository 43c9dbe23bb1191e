"""The compiled core must be the compiled one: there is no pure-Python fallback.

CI sets JOBENGINE_REQUIRE_EXTENSION=1; the assertion holds either way, because the
engine has no slow path to fall back on."""

import importlib.machinery
import sys

import pytest


def test_core_is_a_compiled_extension():
    import jobengine._core as core

    assert isinstance(core.__loader__, importlib.machinery.ExtensionFileLoader), (
        f"jobengine._core is not a compiled extension: {core.__file__}"
    )


def test_missing_core_gives_an_actionable_error(monkeypatch):
    import jobengine

    monkeypatch.setitem(sys.modules, "jobengine._core", None)
    with pytest.raises(ImportError, match="pip install"):
        jobengine._load_core()
