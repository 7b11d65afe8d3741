"""The examples in the io docstrings run and give what they show."""

import doctest
import importlib

import pytest

MODULES = ["atomic", "discover", "formats", "labels", "nifti", "npz", "raster", "validate", "volume", "_util"]


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    module = importlib.import_module(f"learn2synth.io.{name}")
    result = doctest.testmod(module, optionflags=doctest.ELLIPSIS)
    assert result.failed == 0
