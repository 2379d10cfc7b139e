"""Every private torch symbol the library uses exists on the torch this project pins (and is callable)."""

import pytest

from nesterov.engine import compat


@pytest.mark.parametrize("name", sorted(compat.SYMBOLS))
def test_private_torch_symbol_exists(name):
    value = compat.SYMBOLS[name]
    assert value is not None, name
    if not name.endswith("use_duck_shape"):
        assert callable(value), name


def test_no_duck_shapes_patches_and_restores():
    before = compat.fx_config.use_duck_shape
    with compat.no_duck_shapes():
        assert compat.fx_config.use_duck_shape is False
    assert compat.fx_config.use_duck_shape == before
