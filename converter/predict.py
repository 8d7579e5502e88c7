"""``caffe2keras predict``: classify an image with a converted model, the seed's kitten table.

The image is decoded with TensorFlow's own decoders (PNG, JPEG, GIF, BMP), scaled so it covers
the model's input and centre-cropped to it, and handed over as pixels 0–255. What the model
already does (the :class:`~caffe2keras.preprocess.CaffePreprocess` baked in at conversion) is not
done again: such a model takes RGB pixels when converted with ``--rgb-input``, otherwise BGR as
Caffe reads images; a model without it gets BGR pixels as they are.
"""

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import depth
from .errors import ConversionError, clip


@dataclass
class Prediction:
    rank: int
    index: int
    probability: float
    label: str


def load_model(path):
    """A converted ``.keras`` / ``.h5`` model, loaded with ``safe_mode`` (no code from the file)."""
    import keras

    from . import preprocess  # noqa: F401  (registers CaffePreprocess)

    path = Path(path)
    if not path.is_file():
        raise ConversionError("no such model file (predict and verify read .keras or .h5 files)", file=path)
    try:
        return depth.call(keras.models.load_model, path, safe_mode=True, compile=False)
    except (OSError, ValueError, TypeError) as err:
        raise ConversionError(f"cannot be loaded as a Keras model ({clip(err)})", file=path) from None


def image_input(model):
    """The (height, width, channels) of the model's single image input; a free (any) height or
    width is None."""
    if len(model.inputs) != 1 or len(model.inputs[0].shape) != 4:
        shapes = ", ".join(str(tuple(i.shape)) for i in model.inputs)
        raise ConversionError(f"predict needs a model with one image input (N, H, W, C); this one has {shapes}")
    _, height, width, channels = model.inputs[0].shape
    if channels not in (1, 3):
        raise ConversionError(f"predict needs a 1- or 3-channel image input, the model's has {channels} channels")
    return (None if height is None else int(height)), (None if width is None else int(width)), int(channels)


def decode_image(path, channels):
    """The image at ``path`` as a float32 tensor (h, w, channels) of pixels 0–255, RGB (or grey)."""
    import tensorflow as tf

    path = Path(path)
    if not path.is_file():
        raise ConversionError("no such image file", file=path)
    try:
        image = tf.io.decode_image(path.read_bytes(), channels=channels, expand_animations=False)
    except (tf.errors.InvalidArgumentError, ValueError) as err:
        raise ConversionError(f"cannot be decoded as an image ({clip(err)})", file=path) from None
    return tf.cast(image, tf.float32)


def load_image(path, height, width, channels):
    """The image at ``path`` as float32 (height, width, channels) pixels 0–255, RGB (or grey):
    scaled (bilinear, antialiased) so it covers height x width, then centre-cropped. A model
    taking any size (height and width None) gets the image as it is."""
    import tensorflow as tf

    image = decode_image(path, channels)
    h, w = int(image.shape[0]), int(image.shape[1])
    height, width = height or h, width or w
    if (h, w) != (height, width):
        factor = max(height / h, width / w)
        size = (max(height, round(h * factor)), max(width, round(w * factor)))
        image = tf.image.resize(image, size, method="bilinear", antialias=True)
        top, left = (size[0] - height) // 2, (size[1] - width) // 2
        image = image[top : top + height, left : left + width, :]
    return np.clip(image.numpy(), 0.0, 255.0).astype(np.float32)


def model_pixels(model, rgb):
    """Turn RGB pixels into what ``model`` takes: RGB if its baked preprocessing swaps channels
    itself, else Caffe's BGR."""
    from . import preprocess

    config = preprocess.find(model)
    if rgb.shape[-1] == 3 and not (config and config["rgb_input"]):
        return rgb[..., ::-1]
    return rgb


def read_labels(path):
    path = Path(path)
    if not path.is_file():
        raise ConversionError("no such labels file", file=path)
    return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]


def scores(model, batch, output=None):
    """The chosen output of ``model`` for ``batch``, one flat score vector per image (4-D
    outputs flattened in Caffe's C, H, W order)."""
    import keras

    names = [t.name for t in model.outputs]
    if output is None:
        index = 0
    elif output in names:
        index = names.index(output)
    else:
        raise ConversionError(f"the model has no output '{output}' (outputs: {', '.join(names)})")
    outs = model([batch] if isinstance(model.input, (list, tuple)) else batch, training=False)
    outs = outs if isinstance(outs, (list, tuple)) else [outs]
    value = keras.ops.convert_to_numpy(outs[index]).astype(np.float64)
    if value.ndim == 4:
        value = value.transpose(0, 3, 1, 2)
    return value.reshape(value.shape[0], -1)


def top_k(vector, k, labels=None):
    order = np.argsort(-vector, kind="stable")[:k]
    return [
        Prediction(rank + 1, int(i), float(vector[i]), labels[i] if labels and i < len(labels) else "")
        for rank, i in enumerate(order)
    ]


def predict(model, image_path, labels_path=None, k=5, output=None):
    """Top-``k`` predictions for one image: ``(predictions, notes)``; notes are warnings for the
    user. ``model`` is a loaded model or the path of one."""
    if isinstance(model, (str, Path)):
        model = load_model(model)
    from . import preprocess

    height, width, channels = image_input(model)
    notes = []
    if preprocess.find(model) is None:
        notes.append("the model has no baked preprocessing (convert with --mean/--scale/--rgb-input): "
                     "it is fed raw BGR pixels 0-255")
    pixels = model_pixels(model, load_image(image_path, height, width, channels))
    vector = scores(model, pixels[None], output=output)[0]
    labels = read_labels(labels_path) if labels_path else None
    if labels is not None and len(labels) != vector.size:
        notes.append(f"{len(labels)} labels for {vector.size} scores")
    return top_k(vector, k, labels), notes


def format_table(predictions):
    lines = [f"{'rank':>4}  {'probability':>12}  {'class':>5}  label"]
    for p in predictions:
        lines.append(f"{p.rank:>4}  {p.probability:>12.7g}  {p.index:>5}  {p.label}".rstrip())
    return "\n".join(lines)
