"""caffe2keras: exact Keras 3 replicas of Caffe models, without Caffe.

    import caffe2keras
    model = caffe2keras.convert("deploy.prototxt", "weights.caffemodel")

Importing the package also registers its custom Keras layers, so saved models load with
``keras.models.load_model(path, safe_mode=True)``.
"""

from . import layers  # noqa: F401  (registers the custom Keras layers)
from .api import build, convert
from .errors import ConversionError

__version__ = "0.1.0"
__all__ = ["convert", "build", "ConversionError", "__version__"]
