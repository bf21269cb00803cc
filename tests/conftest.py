import os
import sys

# tests import their shared helpers as a plain module
sys.path.insert(0, os.path.dirname(__file__))

import pytest


@pytest.fixture(autouse=True, scope="session")
def poison_native_outputs():
    """Gradient buffers of the native kernels start as NaN in every test, so an element
    a kernel forgets to write fails the comparison instead of passing by luck."""
    from fastmi.runtime import cpu_extension
    cpu_extension.set_poison_outputs(True)
    yield
    cpu_extension.set_poison_outputs(False)
