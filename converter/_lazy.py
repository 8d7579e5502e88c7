"""Keras, and so TensorFlow, loaded only when something needs it.

``import caffe2keras`` must cost nothing it does not need (``--help`` and ``inspect`` never
build a model), must not pick the Keras backend's import order for the user (TensorFlow first
and then Keras on the torch backend crashes the process), and must leave the user's
environment and stderr alone. Yet saved models must load with ``safe_mode=True`` right after
``import caffe2keras``, which needs the custom Keras classes registered. So:

- modules that call Keras from their functions name it through :class:`LazyModule`, imported
  on first attribute access;
- the modules defining Keras classes are imported as soon as Keras is: now if it is loaded
  already, else right after the user's own ``import keras`` completes (a finder on
  ``sys.meta_path`` that steps aside once it has seen Keras load).
"""

import importlib
import importlib.abc
import importlib.util
import sys
import types
import warnings

# The modules whose import registers custom Keras objects (layers, losses, optimizers, schedules).
KERAS_OBJECT_MODULES = ("layers", "blobtable", "losses", "preprocess", "solver")


class LazyModule(types.ModuleType):
    """A stand-in for the module ``name``, imported when one of its attributes is first read."""

    def __getattr__(self, attribute):
        return getattr(importlib.import_module(self.__name__), attribute)


keras = LazyModule("keras")
blobtable = LazyModule(f"{__package__}.blobtable")
layers = LazyModule(f"{__package__}.layers")
preprocess = LazyModule(f"{__package__}.preprocess")


def register_keras_objects(layers_complete=False):
    """Import the modules defining our Keras objects. When Keras is being loaded by
    ``caffe2keras.layers`` itself (``import caffe2keras.layers`` before Keras), the other modules
    would import names the half-run package has not defined yet: the package calls this again
    at its end (``layers_complete``)."""
    package = sys.modules.get(f"{__package__}.layers")
    if not layers_complete and package is not None and getattr(package.__spec__, "_initializing", False):
        return
    for name in KERAS_OBJECT_MODULES:
        importlib.import_module(f"{__package__}.{name}")


def register_when_keras_loads():
    """Register the custom Keras objects now if Keras is loaded, else once it is."""
    if "keras" in sys.modules:
        register_keras_objects()
    elif not any(isinstance(finder, _AfterKeras) for finder in sys.meta_path):
        sys.meta_path.insert(0, _AfterKeras())


class _AfterKeras(importlib.abc.MetaPathFinder):
    """Finds nothing itself: it asks the other finders for ``keras`` and makes that module's
    loader register our objects once the module has run."""

    def __init__(self):
        self.searching = False

    def find_spec(self, name, path=None, target=None):
        if name != "keras" or self.searching:
            return None
        self.searching = True
        try:
            spec = importlib.util.find_spec(name)
        finally:
            self.searching = False
        if spec is None or not hasattr(spec.loader, "exec_module"):
            return spec
        loader, run = spec.loader, spec.loader.exec_module

        def exec_module(module):
            run(module)
            del loader.exec_module
            if self in sys.meta_path:
                sys.meta_path.remove(self)
            try:
                register_keras_objects()
            except Exception as err:  # never break the user's `import keras`
                warnings.warn(f"caffe2keras could not register its Keras layers ({type(err).__name__}: {err}); "
                              "import caffe2keras.layers to see why", stacklevel=2)

        loader.exec_module = exec_module
        return spec
