"""``caffe2keras predict``: classify images with a converted model, the seed's kitten table.

The model may be any file caffe2keras writes (see :mod:`caffe2keras.runtime`); the images one
file or a folder of them, run in batches. Each image is decoded with TensorFlow's own decoders
(PNG, JPEG, GIF, BMP), scaled so it covers the model's input and centre-cropped to it, and
handed over as pixels 0–255. What the model already does (the
:class:`~caffe2keras.preprocess.CaffePreprocess` baked in at conversion) is not done again: such a
model takes RGB pixels when converted with ``--rgb-input``, otherwise BGR as Caffe reads images;
a model without it gets BGR pixels as they are.

Which output is ranked: the one asked for (``--output``, a Caffe blob name), else the only one,
else the output of a Softmax layer, else the first; with several outputs a note says which. Its
values are called probabilities only when they are a softmax's and sum to one, else scores.
"""

from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from .errors import ConversionError, clip
from .layout import to_caffe_order

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".gif", ".bmp")
# Images per model call when predicting a folder.
BATCH = 16


@dataclass
class Prediction:
    rank: int
    index: int
    score: float
    label: str


@dataclass
class Ranking:
    """The predictions for one image (or why there are none)."""

    image: str
    output: str
    probabilities: bool  # the values are a softmax's probabilities, not scores
    predictions: list = field(default_factory=list)
    error: str = None

    def as_dict(self):
        key = "probability" if self.probabilities else "score"
        predictions = [{**{k: v for k, v in asdict(p).items() if k != "score"}, key: p.score} for p in self.predictions]
        out = {"image": self.image, "output": self.output, "values": key, "predictions": predictions}
        return {**out, "error": self.error} if self.error else out


def load_model(path):
    """A converted model from any file caffe2keras writes, as a :class:`~caffe2keras.runtime.Runner`."""
    from . import runtime

    return runtime.load(path)


def image_input(runner):
    """The (height, width, channels) of the model's single image input; a free (any) height or
    width is None."""
    ports = runner.inputs
    if len(ports) != 1 or len(ports[0].shape) != 4:
        shapes = ", ".join(str(tuple(p.shape)) for p in ports)
        raise ConversionError(f"predict needs a model with one image input (N, H, W, C); this one has {shapes}")
    _, height, width, channels = ports[0].shape
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
    """Turn RGB pixels into what ``model`` (a Keras model or a runner) takes: RGB if its baked
    preprocessing swaps channels itself, else Caffe's BGR."""
    from . import preprocess

    config = model.preprocess if hasattr(model, "preprocess") else preprocess.find(model)
    if rgb.shape[-1] == 3 and not (config and config["rgb_input"]):
        return rgb[..., ::-1]
    return rgb


def read_labels(path):
    path = Path(path)
    if not path.is_file():
        raise ConversionError("no such labels file", file=path)
    return [line.strip() for line in path.read_text(encoding="utf-8", errors="replace").splitlines()]


def images_of(path):
    """The image files ``path`` names: itself, or a folder's images (by name)."""
    path = Path(path)
    if path.is_dir():
        found = sorted(p for p in path.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)
        if not found:
            raise ConversionError(f"holds no images ({', '.join(IMAGE_SUFFIXES)})", file=path)
        return found
    if not path.is_file():
        raise ConversionError("no such image file or folder", file=path)
    return [path]


def choose_output(runner, requested=None):
    """``(output name, notes)``: which output to rank (see the module doc)."""
    from .naming import keras_name

    names = runner.output_names
    if requested is not None:
        for name in (requested, keras_name(requested)):
            if name in names:
                return name, []
        raise ConversionError(f"the model has no output '{requested}' (outputs: {', '.join(names)})")
    if len(names) == 1:
        return names[0], []
    softmax = [n for n in names if n in runner.softmax_outputs]
    chosen = softmax[0] if softmax else names[0]
    why = "the softmax output" if softmax else "no output is a softmax's, so the first"
    return chosen, [f"ranking output '{chosen}' ({why}) of {', '.join(names)}; choose another with --output"]


def is_distribution(values):
    return bool(np.all(values >= 0) and abs(float(np.sum(values)) - 1.0) <= 1e-3)


def flat_scores(value):
    """One flat score vector per image (4-D outputs flattened in Caffe's C, H, W order)."""
    value = np.asarray(value, np.float64)
    return to_caffe_order(value).reshape(value.shape[0], -1)


def top_k(vector, k, labels=None):
    order = np.argsort(-vector, kind="stable")[:k]
    return [
        Prediction(rank + 1, int(i), float(vector[i]), labels[i] if labels and i < len(labels) else "")
        for rank, i in enumerate(order)
    ]


def predict(model, image_path, labels_path=None, k=5, output=None):
    """Top-``k`` predictions for an image or a folder of images: ``(rankings, notes)``, one
    :class:`Ranking` per image; notes are warnings for the user. ``model`` is a runner, a Keras
    model or the path of a converted model."""
    from . import runtime

    if isinstance(model, (str, Path)):
        model = load_model(model)
    elif not isinstance(model, runtime.Runner):
        model = runtime.KerasRunner.of(model)
    height, width, channels = image_input(model)
    name, notes = choose_output(model, output)
    index = model.output_names.index(name)
    if model.preprocess is None:
        notes.append("the model has no baked preprocessing (convert with --mean/--scale/--rgb-input): "
                     "it is fed raw BGR pixels 0-255")
    labels = read_labels(labels_path) if labels_path else None
    softmax = name in model.softmax_outputs
    rankings = []
    paths = images_of(image_path)
    # A model of any input size takes each image as it is: images of different sizes, one a call.
    step = BATCH if height and width else 1
    for start in range(0, len(paths), step):
        batch, ok = [], []
        for path in paths[start : start + step]:
            try:
                batch.append(model_pixels(model, load_image(path, height, width, channels)))
                ok.append(path)
            except ConversionError as err:
                if len(paths) == 1:
                    raise
                rankings.append(Ranking(str(path), name, False, error=str(err)))
        if not batch:
            continue
        scores = flat_scores(model([np.stack(batch)])[index])
        for path, vector in zip(ok, scores):
            rankings.append(Ranking(str(path), name, softmax and is_distribution(vector), top_k(vector, k, labels)))
        if labels is not None and len(labels) != scores.shape[1] and start == 0:
            notes.append(f"{len(labels)} labels for {scores.shape[1]} scores")
    order = {str(p): i for i, p in enumerate(paths)}
    return sorted(rankings, key=lambda r: order[r.image]), notes


def format_table(rankings):
    """The kitten table; with several images, one block of rows per image, named."""
    several = len(rankings) > 1
    kind = "probability" if all(r.probabilities for r in rankings) else "score"
    lines = [f"{'rank':>4}  {kind:>12}  {'class':>5}  label"]
    for r in rankings:
        if several:
            lines.append(f"{r.image}:" + (f" {r.error}" if r.error else ""))
        for p in r.predictions:
            lines.append(f"{p.rank:>4}  {p.score:>12.7g}  {p.index:>5}  {p.label}".rstrip())
    return "\n".join(lines)
