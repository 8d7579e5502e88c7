"""The registry of Caffe types: every type has one spec, with its top shapes, learned blobs and
translator side by side in one family module of ``caffe2keras.types``."""

import pytest

from caffe2keras import shapes, spec, types


def test_every_type_has_a_shape_function_and_a_translator():
    assert len(types.SPECS) > 50
    for name, s in types.SPECS.items():
        assert s.type == name
        assert callable(s.shape) and callable(s.translate) and callable(s.learned), name


def test_a_types_shape_function_and_translator_live_in_one_module():
    """A reader changing one type opens one module: only the shape functions several types share
    come from :mod:`caffe2keras.shapes`."""
    for name, s in types.SPECS.items():
        assert s.translate.__module__.startswith("caffe2keras.types."), name
        assert s.shape.__module__ in (s.translate.__module__, shapes.__name__), name
        assert s.learned is spec.learns_nothing or s.learned.__module__ == s.translate.__module__, name


def test_a_type_is_registered_once():
    with pytest.raises(RuntimeError, match="registered twice"):
        spec.register("Pooling", shape=shapes.same_shape)(lambda ctx, node, inputs: [])


def test_a_type_cannot_be_registered_without_a_shape_function():
    with pytest.raises(TypeError):
        spec.register("NoShape")(lambda ctx, node, inputs: [])
    assert "NoShape" not in types.SPECS


def test_supported_types_are_the_registry():
    assert types.supported_types() == sorted(t for t in types.SPECS if t != spec.VIEW)
