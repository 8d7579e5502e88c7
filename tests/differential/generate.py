"""Random *valid* Caffe nets: NNSmith's idea of generating only what type-checks.

A net grows layer by layer from its inputs. Each step picks a Caffe type, a bottom (or several)
whose shape that type accepts, and parameters inside the type's legal range for that shape, so
Caffe takes every net it is given; a net Caffe refuses is a bug here. What this module believes
about each top's shape is recorded (``Net.shapes``) and checked against Caffe's by the runner.

Values are kept where float32 is well-conditioned: every blob carries a rough bound on its
magnitude and its sign, so Exp sees a bounded argument, Log and fractional Powers a positive one,
Embed integer indices, and blobs that have grown large are squashed before they grow further.
"""

import math
import random
from dataclasses import dataclass, field, replace

import numpy as np

# Fields whose default differs between Caffe forks (SSD: clip false; the oracle's fork: true): always
# written out, and never dropped by the shrinker.
EXPLICIT = {("prior_box_param", "clip")}

MAX_ELEMENTS = 4096  # per blob, batch included: nets stay cheap to run a thousand times
MAX_DIM = 24
SQUASH_ABOVE = 40.0  # a blob bigger than this only feeds layers that bring it back down


@dataclass
class Blob:
    name: str
    shape: tuple
    mag: float = 4.0  # rough bound on |value|
    sign: str = "any"  # "any", "nonneg" or "pos"
    low: float = 0.0  # "pos": rough lower bound of the values
    index: int = 0  # > 0: integer values in [0, index), Embed's bottoms
    is_input: bool = False
    reads: int = 0  # layers reading this version of the blob
    memory: str = ""  # the blob whose memory this one is a view of (Split, Reshape, Flatten tops)

    @property
    def rank(self):
        return len(self.shape)

    @property
    def count(self):
        return math.prod(self.shape)


@dataclass
class Layer:
    name: str
    type: str
    bottoms: list
    tops: list
    params: dict = field(default_factory=dict)  # {"convolution_param": {...}}: scalars, lists, dicts
    phase: str = None  # "TRAIN": a layer Caffe's TEST net drops


@dataclass
class Input:
    name: str
    shape: tuple
    kind: tuple  # ("normal", std) | ("uniform", lo, hi) | ("index", n) | ("array", values)


@dataclass
class Net:
    name: str
    inputs: list
    layers: list
    style: str = "layer"  # how inputs are declared: "layer", "input_shape" or "input_dim"
    weights: str = "caffemodel"  # the format Caffe saves the weights in: "caffemodel" or "h5" (HDF5)
    legacy: bool = False  # written in the V1 format (``layers`` with enum types)
    seed: int = 0  # of the weights (Caffe's --randomize) and of the input values
    shapes: dict = field(default_factory=dict)  # (layer, top) -> the shape this module expects

    def prototxt(self):
        return render(self)

    def input_values(self):
        rng = np.random.default_rng(self.seed + 7919)
        values = {}
        for inp in self.inputs:
            kind = inp.kind
            if kind[0] == "normal":
                v = rng.normal(0.0, kind[1], inp.shape)
            elif kind[0] == "uniform":
                v = rng.uniform(kind[1], kind[2], inp.shape)
            elif kind[0] == "index":
                v = rng.integers(0, kind[1], inp.shape)
            else:
                v = kind[1]
            values[inp.name] = np.asarray(v, dtype=np.float32)
        return values

    def size(self):
        """What the shrinker makes smaller: layers, then input elements, then parameter fields."""
        fields = sum(_count_fields(layer.params) for layer in self.layers)
        return (len(self.layers), sum(math.prod(i.shape) for i in self.inputs), fields)


def _count_fields(params):
    if isinstance(params, dict):
        return sum(_count_fields(v) for v in params.values()) or 1
    if isinstance(params, list):
        return len(params)
    return 1


class Enum(str):
    """An enum value in prototxt text (printed bare, not quoted)."""


def _value(v):
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, Enum):
        return str(v)
    if isinstance(v, str):
        return '"' + v + '"'
    if isinstance(v, float):
        return repr(float(np.float32(v)))
    return str(v)


def _render_fields(params, indent):
    pad = "  " * indent
    lines = []
    for key, value in params.items():
        items = value if isinstance(value, list) else [value]
        for item in items:
            if isinstance(item, dict):
                lines.append(f"{pad}{key} {{")
                lines.extend(_render_fields(item, indent + 1))
                lines.append(f"{pad}}}")
            else:
                lines.append(f"{pad}{key}: {_value(item)}")
    return lines


def render(net):
    lines = [f'name: "{net.name}"']
    if net.style == "layer":
        for inp in net.inputs:
            lines.append("layer {")
            lines.append(f'  name: "{inp.name}"\n  type: "Input"\n  top: "{inp.name}"')
            lines.extend(_render_fields({"input_param": {"shape": {"dim": list(inp.shape)}}}, 1))
            lines.append("}")
    else:
        for inp in net.inputs:
            lines.append(f'input: "{inp.name}"')
        for inp in net.inputs:
            if net.style == "input_dim":
                lines.extend(f"input_dim: {d}" for d in inp.shape)
            else:
                lines.extend(_render_fields({"input_shape": {"dim": list(inp.shape)}}, 0))
    for layer in net.layers:
        lines.append("layers {" if net.legacy else "layer {")
        lines.append(f'  name: "{layer.name}"')
        lines.append(f"  type: {V1_NAMES[layer.type]}" if net.legacy else f'  type: "{layer.type}"')
        lines.extend(f'  bottom: "{b}"' for b in layer.bottoms)
        lines.extend(f'  top: "{t}"' for t in layer.tops)
        if layer.phase:
            lines.append(f"  include {{ phase: {layer.phase} }}")
        lines.extend(_render_fields(layer.params, 1))
        lines.append("}")
    return "\n".join(lines) + "\n"


# The types a V1 prototxt can hold (with these parameters), and their V1 enum names.
V1_NAMES = {
    "AbsVal": "ABSVAL", "ArgMax": "ARGMAX", "BNLL": "BNLL", "Concat": "CONCAT", "Convolution": "CONVOLUTION",
    "Deconvolution": "DECONVOLUTION", "Dropout": "DROPOUT", "Eltwise": "ELTWISE", "Exp": "EXP",
    "Flatten": "FLATTEN", "InnerProduct": "INNER_PRODUCT", "LRN": "LRN", "MVN": "MVN", "Pooling": "POOLING",
    "Power": "POWER", "ReLU": "RELU", "Sigmoid": "SIGMOID", "Silence": "SILENCE", "Softmax": "SOFTMAX",
    "Split": "SPLIT", "Slice": "SLICE", "TanH": "TANH", "Threshold": "THRESHOLD",
}
# Types without learned blobs, whose layers may share a name (Caffe allows it: HED has five 'crop').
WEIGHTLESS = {
    "ReLU", "Sigmoid", "TanH", "AbsVal", "BNLL", "Power", "Exp", "Log", "Threshold", "Dropout", "Softmax",
    "Concat", "Slice", "Split", "Eltwise", "Flatten", "Reshape", "Crop", "Permute", "Pooling", "LRN", "Tile",
}


def sigmoid(x):
    return 1.0 / (1.0 + math.exp(-x))


class Generator:
    """Makes nets from one seed: ``Generator(seed).net(i)`` is the same net every time."""

    def __init__(self, seed=0, max_layers=14):
        self.seed = seed
        self.max_layers = max_layers

    def net(self, index):
        seed = (self.seed * 1_000_003 + index) % 2**31
        builder = _Builder(random.Random(seed), seed, self.max_layers)
        return builder.build(f"diff_{self.seed}_{index}")


# Types the builder draws from, with their relative weights.
WEIGHTS = {
    "Convolution": 10, "Deconvolution": 3, "InnerProduct": 7, "Pooling": 8, "LRN": 3,
    "ReLU": 8, "PReLU": 3, "ELU": 2, "Sigmoid": 3, "TanH": 3, "AbsVal": 2, "BNLL": 2,
    "Power": 4, "Exp": 2, "Log": 3, "Threshold": 1, "Dropout": 2, "Softmax": 3,
    "Concat": 5, "Slice": 4, "Split": 2, "Eltwise": 6, "BatchNorm": 5, "Scale": 6, "Bias": 3,
    "Flatten": 3, "Reshape": 4, "Crop": 3, "Permute": 3, "MVN": 3, "Reduction": 3, "ArgMax": 2,
    "Tile": 2, "Embed": 2, "Silence": 1, "ReLU6": 2, "HardSigmoid": 1, "HardSwish": 2,
    "Normalize": 2, "Upsample": 2, "Pad": 2, "PixelShuffle": 2, "BilinearInterpolate": 2,
    "PriorBox": 1, "SE": 2, "Residual": 3, "TrainOnly": 1,
}
# Layers Caffe runs in place on their bottom when top == bottom.
IN_PLACE = {
    "ReLU", "PReLU", "ELU", "Sigmoid", "TanH", "BNLL", "Power", "Exp", "Log", "Threshold",
    "Dropout", "BatchNorm", "Scale", "Bias", "ReLU6", "HardSigmoid", "HardSwish",
}
# Types whose tops Caffe makes views of their bottom's memory (ShareData).
SHARES_MEMORY = {"Split", "Reshape", "Flatten"}
PREFIX = {
    "Convolution": "conv", "Deconvolution": "deconv", "InnerProduct": "fc", "Pooling": "pool",
    "BatchNorm": "bn", "Eltwise": "eltwise", "Concat": "concat", "Slice": "slice",
}


class _Builder:
    def __init__(self, rng, seed, max_layers):
        self.rng = rng
        self.seed = seed
        self.max_layers = max_layers
        self.blobs = {}  # name -> Blob, the current version of each Caffe blob name
        self.layers = []
        self.shapes = {}
        self.inputs = []
        self.serial = 0

    # --- bookkeeping ---------------------------------------------------------------------

    def fresh(self, prefix):
        self.serial += 1
        if self.rng.random() < 0.1:
            return f"{prefix}{self.serial}/out"  # names with "/" as in inception_3a/1x1
        return f"{prefix}{self.serial}"

    def add(self, type_, bottoms, tops, params=None, phase=None, name=None):
        """Append a layer reading Blobs ``bottoms`` and producing Blobs ``tops``."""
        name = name or self.fresh(PREFIX.get(type_, type_.lower()))
        namesakes = [layer.name for layer in self.layers if layer.type in WEIGHTLESS]
        if type_ in WEIGHTLESS and namesakes and self.rng.random() < 0.03:
            name = self.rng.choice(namesakes)
        layer = Layer(name, type_, [b.name for b in bottoms], [t.name for t in tops], params or {}, phase)
        if phase is None:
            for b in bottoms:
                b.reads += 1
            in_place = [t for i, t in enumerate(tops) if i < len(bottoms) and bottoms[i].name == t.name]
            for i, t in enumerate(tops):
                t.reads = 0  # a new version, even when the same Blob object stands for it
                if t in in_place:
                    t.memory = bottoms[i].memory
                elif type_ in SHARES_MEMORY:
                    t.memory = bottoms[0].memory
                else:
                    t.memory = t.name
                self.blobs[t.name] = t
                self.shapes[(name, t.name)] = tuple(t.shape)
            for t in in_place:
                # An in-place write is seen through every view of that memory: same values.
                for view in self.blobs.values():
                    if view is not t and view.memory == t.memory:
                        view.mag, view.sign, view.low = t.mag, t.sign, t.low
        self.layers.append(layer)
        return layer

    def top(self, bottom, shape=None, in_place=False, **attrs):
        """A Blob for a layer's top: a new name (or ``bottom``'s when in place), ``bottom``'s
        attributes unless given."""
        name = bottom.name if in_place else self.fresh("b")
        base = dict(mag=bottom.mag, sign=bottom.sign, low=bottom.low, index=0, is_input=False, reads=0)
        base.update(attrs)
        return Blob(name, tuple(shape if shape is not None else bottom.shape), **base)

    def may_in_place(self, bottom):
        # Caffe inserts a Split before a blob version read twice and renames the in-place
        # layer's bottom, not its top: in place is only valid for a version's sole reader.
        # (Writing a Split top or a Reshape view in place also changes the blobs sharing its
        # memory: valid, and generated.)
        return not bottom.reads and self.rng.random() < 0.35

    def pick(self, ok=lambda b: True, mag_limit=SQUASH_ABOVE):
        candidates = [b for b in self.blobs.values() if ok(b) and b.mag <= mag_limit and not b.index]
        if not candidates:
            return None
        # Prefer blobs nobody reads yet, and recent ones: deeper nets, fewer dead ends.
        order = {name: i for i, name in enumerate(self.blobs)}
        weights = [(3.0 if b.reads == 0 else 1.0) * (1 + order[b.name]) for b in candidates]
        return self.rng.choices(candidates, weights)[0]

    def choice(self, *options):
        return self.rng.choice(options)

    def maybe(self, params, chances):
        """``params`` with each ``key: (probability, value)`` of ``chances`` set that often."""
        for key, (probability, value) in chances.items():
            if self.rng.random() < probability:
                params[key] = value
        return params

    def signed_axis(self, axis, rank):
        return axis - rank if self.rng.random() < 0.3 else axis

    # --- the net -------------------------------------------------------------------------

    def build(self, name):
        rng = self.rng
        # Some nets keep to the types a V1 (legacy) prototxt can hold, to be written that way.
        legacy = rng.random() < 0.08
        kinds = [k for k in WEIGHTS if k in V1_NAMES or k == "TrainOnly"] if legacy else list(WEIGHTS)
        n_inputs = rng.choices([1, 2, 3], [70, 25, 5])[0]
        batch = rng.choices([1, 2, 3], [5, 3, 1])[0]
        for i in range(n_inputs):
            self.new_input("data" if i == 0 else f"data{i}", batch)
        if rng.random() < 0.1 and "Embed" in kinds:
            self.new_index_input(batch)
        n_layers = rng.randint(1, self.max_layers)
        attempts = 0
        while len([layer for layer in self.layers if layer.phase is None]) < n_layers and attempts < 200:
            attempts += 1
            big = [b for b in self.blobs.values() if b.mag > SQUASH_ABOVE and b.reads == 0]
            if big and rng.random() < 0.7:
                self.squash(rng.choice(big))
                continue
            kind = rng.choices(kinds, [WEIGHTS[k] for k in kinds])[0]
            getattr(self, "gen_" + kind)()
        for inp in self.inputs:
            blob = self.blobs[inp.name]
            if blob.is_input and blob.reads == 0 and rng.random() < 0.5:
                self.squash(blob, force="TanH")  # else an output of the net (Caffe's net.outputs)
        style = "layer"
        if rng.random() < 0.3 or legacy:  # V1 nets declare their inputs in the net's header
            style = "input_dim" if all(len(i.shape) == 4 for i in self.inputs) and rng.random() < 0.5 else "input_shape"
        # Caffe's save_hdf5 makes a group per layer name, its own Split layers named after blobs
        # included: a "/" in one makes it fail.
        names = [layer.name for layer in self.layers]
        plain = len(set(names)) == len(names) and not any("/" in n for layer in self.layers
                                                          for n in [layer.name, *layer.tops])
        weights = "h5" if plain and rng.random() < 0.15 else "caffemodel"
        expressible = all(layer.type in V1_NAMES and not (layer.type == "Flatten" and layer.params)
                          for layer in self.layers)
        legacy = expressible and (legacy or style != "layer" and rng.random() < 0.3)
        return Net(name, self.inputs, self.layers, style, weights, legacy, self.seed, self.shapes)

    def new_input(self, name, batch):
        rng = self.rng
        rank = rng.choices([4, 2, 3, 5], [66, 14, 12, 8])[0]
        shape = [batch]
        if rank == 4:
            shape += [rng.randint(1, 8), self.spatial(), self.spatial()]
        elif rank == 2:
            shape += [rng.randint(1, 24)]
        elif rank == 3:
            shape += [rng.randint(1, 6), rng.randint(1, 12)]
        else:
            shape += [rng.randint(1, 4), rng.randint(1, 5), rng.randint(1, 5), rng.randint(1, 4)]
        positive = rng.random() < 0.15
        kind = ("uniform", 0.2, 2.0) if positive else ("normal", 1.0)
        self.inputs.append(Input(name, tuple(shape), kind))
        blob = Blob(name, tuple(shape), mag=2.0 if positive else 4.5, sign="pos" if positive else "any",
                    low=0.2 if positive else 0.0, is_input=True, memory=name)
        self.blobs[name] = blob

    def spatial(self):
        return self.rng.choices([1, 2, 3, 4, 5, 6, 7, 8, 9, 11, 13], [2, 3, 4, 3, 5, 4, 5, 3, 3, 2, 1])[0]

    def new_index_input(self, batch):
        rng = self.rng
        shape = (batch, rng.randint(1, 6)) if rng.random() < 0.6 else (batch, rng.randint(1, 3), rng.randint(1, 5))
        n = rng.randint(1, 12)
        name = f"index{len(self.inputs)}"
        self.inputs.append(Input(name, shape, ("index", n)))
        self.blobs[name] = Blob(name, shape, mag=n, sign="nonneg", index=n, is_input=True, memory=name)
        self.gen_Embed(self.blobs[name])

    # --- squashing: bring a large blob back to order one ---------------------------------

    def squash(self, x, force=None):
        kind = force or self.choice("TanH", "Sigmoid", "Power", "Power", "Softmax")
        if kind == "Power":
            scale = 1.0 / max(x.mag, 1.0)
            top = self.top(x, mag=1.0, low=x.low * scale)
            self.add("Power", [x], [top], {"power_param": {"scale": scale}})
        elif kind == "Softmax" and x.rank >= 2:
            self.add("Softmax", [x], [self.top(x, mag=1.0, sign="pos", low=0.0)])
        elif kind == "Sigmoid":
            self.add("Sigmoid", [x], [self.top(x, mag=1.0, sign="pos", low=sigmoid(-min(x.mag, 30)))])
        else:
            self.add("TanH", [x], [self.top(x, mag=1.0, sign="any", low=0.0)])

    # --- one generator per Caffe type ------------------------------------------------------

    def gen_Convolution(self):
        x = self.pick(lambda b: b.rank == 4)
        if x is None:
            return
        rng = self.rng
        n, c, h, w = x.shape
        group = rng.choices([1, c, self.divisor(c)], [6, 2, 2])[0]
        same = rng.random() < 0.35
        for _ in range(20):
            p = {}
            kh, kw = self.kernel_pair(3 if same else 5)
            sh, sw = (1, 1) if same else self.pair(1, 3)
            dh, dw = (1, 1) if rng.random() < 0.7 else self.pair(1, 3)
            if same:
                kh, kw = kh | 1, kw | 1
                ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
            else:
                ph, pw = self.pair(0, 2)
            oh = (h + 2 * ph - (dh * (kh - 1) + 1)) // sh + 1
            ow = (w + 2 * pw - (dw * (kw - 1) + 1)) // sw + 1
            if oh >= 1 and ow >= 1 and h + 2 * ph >= dh * (kh - 1) + 1 and w + 2 * pw >= dw * (kw - 1) + 1:
                break
        else:
            kh = kw = 1
            sh = sw = dh = dw = 1
            ph = pw = 0
            oh, ow = h, w
        if same and rng.random() < 0.7:
            out = c
        else:
            out = group * rng.randint(1, max(1, 12 // group))
        if n * out * oh * ow > MAX_ELEMENTS:
            return
        self.spatial_fields(p, "kernel", kh, kw, "kernel_size")
        self.spatial_fields(p, "stride", sh, sw, "stride")
        self.spatial_fields(p, "pad", ph, pw, "pad")
        if (dh, dw) != (1, 1):
            p["dilation"] = [dh] if dh == dw and rng.random() < 0.7 else [dh, dw]
        if group > 1:
            p["group"] = group
        if rng.random() < 0.25:
            p["bias_term"] = False
        params = {"convolution_param": {"num_output": out, **p}}
        top = self.top(x, (n, out, oh, ow), mag=x.mag * 1.5 + 2.5, sign="any")
        self.add("Convolution", [x], [top], params)

    def divisor(self, n):
        return self.rng.choice([g for g in range(1, n + 1) if n % g == 0])

    def kernel_pair(self, largest):
        if self.rng.random() < 0.7:
            k = self.rng.randint(1, largest)
            return k, k
        return self.rng.randint(1, largest), self.rng.randint(1, largest)

    def pair(self, lo, hi):
        if self.rng.random() < 0.7:
            v = self.rng.randint(lo, hi)
            return v, v
        return self.rng.randint(lo, hi), self.rng.randint(lo, hi)

    def spatial_fields(self, p, prefix, vh, vw, plural, repeated=True):
        """Set a square or rectangular spatial parameter in one of Caffe's spellings."""
        default = 0 if prefix in ("pad",) else 1
        if vh == vw:
            if vh == default and prefix != "kernel" and self.rng.random() < 0.6:
                return
            p[plural] = [vh] if repeated else vh
        elif repeated and self.rng.random() < 0.5:
            p[plural] = [vh, vw]
        else:
            p[prefix + "_h"] = vh
            p[prefix + "_w"] = vw

    def gen_Deconvolution(self):
        x = self.pick(lambda b: b.rank == 4)
        if x is None:
            return
        rng = self.rng
        n, c, h, w = x.shape
        group = rng.choices([1, self.divisor(c)], [7, 3])[0]
        out = group * rng.randint(1, max(1, 8 // group))
        for _ in range(20):
            kh, kw = self.kernel_pair(4)
            sh, sw = self.pair(1, 3)
            ph, pw = self.pair(0, 2)
            dh, dw = (1, 1) if rng.random() < 0.75 else self.pair(1, 2)
            oh = sh * (h - 1) + dh * (kh - 1) + 1 - 2 * ph
            ow = sw * (w - 1) + dw * (kw - 1) + 1 - 2 * pw
            if 1 <= oh <= MAX_DIM and 1 <= ow <= MAX_DIM:
                break
        else:
            return
        if n * out * oh * ow > MAX_ELEMENTS:
            return
        p = {"num_output": out}
        self.spatial_fields(p, "kernel", kh, kw, "kernel_size")
        self.spatial_fields(p, "stride", sh, sw, "stride")
        self.spatial_fields(p, "pad", ph, pw, "pad")
        if (dh, dw) != (1, 1):
            p["dilation"] = [dh] if dh == dw else [dh, dw]
        if group > 1:
            p["group"] = group
        if rng.random() < 0.25:
            p["bias_term"] = False
        # Caffe's random weights are scaled for out/group*kh*kw inputs; each output sums about
        # c/group*kh*kw/(sh*sw) of them.
        gain = math.sqrt(max(1.0, c / max(out, 1))) * 1.5
        self.add("Deconvolution", [x], [self.top(x, (n, out, oh, ow), mag=x.mag * gain + 2.5, sign="any")],
                 {"convolution_param": p})

    def gen_InnerProduct(self):
        rng = self.rng
        x = self.pick(lambda b: b.rank >= 2 and b.count // b.shape[0] <= 600)
        if x is None:
            return
        axis = rng.randint(1, x.rank - 1)
        k = math.prod(x.shape[axis:])
        out = rng.randint(1, 16)
        shape = x.shape[:axis] + (out,)
        if math.prod(shape) > MAX_ELEMENTS or k * out > 20000:
            return
        p = {"num_output": out}
        if axis != 1 or rng.random() < 0.2:
            p["axis"] = self.signed_axis(axis, x.rank)
        transpose = rng.random() < 0.3
        if transpose:
            p["transpose"] = True
        if rng.random() < 0.2:
            p["bias_term"] = False
        gain = math.sqrt(max(1.0, k / out)) if transpose else 1.0
        top = self.top(x, shape, mag=x.mag * 1.5 * gain + 2.5, sign="any")
        self.add("InnerProduct", [x], [top], {"inner_product_param": p})

    def gen_Pooling(self):
        x = self.pick(lambda b: b.rank == 4)
        if x is None:
            return
        rng = self.rng
        n, c, h, w = x.shape
        kind = rng.choice(["MAX", "AVE"])
        p = {"pool": Enum(kind)}
        if rng.random() < 0.15:
            p["global_pooling"] = True
            out = (1, 1)
        else:
            for _ in range(20):
                kh, kw = self.kernel_pair(4)
                sh, sw = self.pair(1, 3)
                ph, pw = self.pair(0, 2)
                ph, pw = min(ph, kh - 1), min(pw, kw - 1)
                ceil = rng.random() < 0.6
                out = tuple(pool_out(size, k, s, q, ceil) for size, k, s, q in ((h, kh, sh, ph), (w, kw, sw, pw)))
                # Without padding, rounding up may add a window wholly past the input: Caffe
                # gives -FLT_MAX (MAX) or 0/0 (AVE) there, values no net means.
                empty = any(q == 0 and (o - 1) * st >= size for o, st, q, size in zip(out, (sh, sw), (ph, pw), (h, w)))
                if min(out) >= 1 and h + 2 * ph >= kh and w + 2 * pw >= kw and not empty:
                    break
            else:
                return
            self.spatial_fields(p, "kernel", kh, kw, "kernel_size", repeated=False)
            self.spatial_fields(p, "stride", sh, sw, "stride", repeated=False)
            self.spatial_fields(p, "pad", ph, pw, "pad", repeated=False)
            if not ceil:
                if rng.random() < 0.5:
                    p["round_mode"] = Enum("FLOOR")
                else:
                    p["ceil_mode"] = False
            elif rng.random() < 0.2:
                p["round_mode"] = Enum("CEIL")
        top = self.top(x, (n, c) + tuple(out), mag=x.mag)
        tops = [top]
        if kind == "MAX" and rng.random() < 0.15 and not p.get("global_pooling"):
            # The argmax mask top (SegNet): indices into the bottom's H*W plane.
            tops.append(self.top(x, top.shape, mag=h * w, sign="nonneg"))
        self.add("Pooling", [x], tops, {"pooling_param": p})

    def gen_LRN(self):
        x = self.pick(lambda b: b.rank == 4)
        if x is None:
            return
        rng = self.rng
        p = {"local_size": rng.choice([1, 3, 5, 7])}
        if rng.random() < 0.6:
            p["alpha"] = rng.choice([1e-4, 1e-2, 0.1, 1.0])
        if rng.random() < 0.6:
            p["beta"] = rng.choice([0.75, 0.5, 1.0, 2.0])
        if rng.random() < 0.4:
            p["k"] = rng.choice([1.0, 2.0, 0.5])
        if rng.random() < 0.4:
            p["norm_region"] = Enum("WITHIN_CHANNEL")
        top = self.top(x, mag=x.mag * 2, sign=x.sign)
        self.add("LRN", [x], [top], {"lrn_param": p})

    def unary(self, type_, params, ok=lambda b: True, mag_limit=SQUASH_ABOVE, **attrs):
        x = self.pick(ok, mag_limit)
        if x is None:
            return None
        in_place = type_ in IN_PLACE and self.may_in_place(x)
        attrs = {k: (v(x) if callable(v) else v) for k, v in attrs.items()}
        top = self.top(x, in_place=in_place, **attrs)
        p = params(x) if callable(params) else params
        self.add(type_, [x], [top], p)
        return top

    def gen_ReLU(self):
        slope = self.rng.choice([0.0, 0.0, 0.0, 0.1, 0.01, -0.3, 1.5])
        if slope == 0.0:
            self.unary("ReLU", {} if self.rng.random() < 0.8 else {"relu_param": {"negative_slope": 0.0}},
                       sign=lambda x: "pos" if x.sign == "pos" else "nonneg")
        else:
            self.unary("ReLU", {"relu_param": {"negative_slope": slope}}, mag=lambda x: x.mag * max(1, abs(slope)),
                       sign=lambda x: x.sign if slope > 0 else "any")

    def gen_ReLU6(self):
        p = {}
        if self.rng.random() < 0.3:
            p = {"relu6_param": {"negative_slope": self.rng.choice([0.1, 0.2, -0.5])}}
        self.unary("ReLU6", p, mag=6.0, sign=lambda x: "any" if p else "nonneg")

    def gen_PReLU(self):
        def params(x):
            p = {}
            if self.rng.random() < 0.3:
                p["channel_shared"] = True
            return {"prelu_param": p} if p else {}

        self.unary("PReLU", params, ok=lambda b: 2 <= b.rank <= 4, mag=lambda x: x.mag * 3, sign="any")

    def gen_ELU(self):
        alpha = self.rng.choice([None, 0.5, 2.0])
        self.unary("ELU", {"elu_param": {"alpha": alpha}} if alpha else {}, sign="any",
                   mag=lambda x: max(x.mag, alpha or 1.0))

    def gen_Sigmoid(self):
        self.unary("Sigmoid", {}, mag_limit=1e9, mag=1.0, sign="pos", low=lambda x: sigmoid(-min(x.mag, 30)))

    def gen_TanH(self):
        self.unary("TanH", {}, mag_limit=1e9, mag=1.0, sign=lambda x: x.sign if x.sign != "pos" else "nonneg")

    def gen_AbsVal(self):
        self.unary("AbsVal", {}, sign=lambda x: "pos" if x.sign == "pos" else "nonneg")

    def gen_BNLL(self):
        self.unary("BNLL", {}, mag=lambda x: x.mag + 1, sign="pos", low=lambda x: math.log1p(math.exp(-min(x.mag, 60))))

    def gen_HardSigmoid(self):
        p = {}
        if self.rng.random() < 0.4:
            p["alpha"] = self.rng.choice([0.1, 1.0 / 6, 0.5])
        if self.rng.random() < 0.3:
            p["beta"] = self.rng.choice([0.5, 0.3])
        self.unary("HardSigmoid", {"hardsigmoid_param": p} if p else {}, mag_limit=1e9, mag=1.0, sign="nonneg")

    def gen_HardSwish(self):
        self.unary("HardSwish", {}, sign="any")

    def gen_Power(self):
        x = self.pick(mag_limit=1e9)
        if x is None:
            return
        rng = self.rng
        power = rng.choice([1.0, 1.0, 2.0, 3.0, 0.5, 1.5, -1.0, -0.5, 0.0])
        scale = rng.choice([1.0, 0.5, -1.0, 2.0, 0.1])
        if x.mag * abs(scale) > 3 and power not in (0.0, 1.0):
            scale = math.copysign(3.0 / x.mag, scale)
        fractional = power != int(power) or power < 0
        if fractional:
            # The base shift + scale * x must stay positive and away from zero.
            if x.sign in ("pos", "nonneg") and scale > 0:
                shift = rng.choice([0.5, 1.0]) if x.sign == "nonneg" or x.low * scale < 0.3 else rng.choice([0.0, 0.5])
                base_lo = shift + scale * x.low
            else:
                shift = abs(scale) * x.mag + rng.choice([0.5, 1.0])
                base_lo = shift - abs(scale) * x.mag
            base_hi = shift + abs(scale) * x.mag
        else:
            shift = rng.choice([0.0, 0.0, 0.5, -1.0])
            base_lo, base_hi = 0.0, abs(shift) + abs(scale) * x.mag
        if power < 0:
            mag = base_lo**power
        else:
            mag = max(base_hi**power, 1.0)
        p = {}
        if power != 1.0:
            p["power"] = power
        if scale != 1.0:
            p["scale"] = scale
        if shift:
            p["shift"] = shift
        in_place = self.may_in_place(x)
        sign = "pos" if fractional else ("nonneg" if power % 2 == 0 else "any")
        low = min(base_lo**power, base_hi**power) if fractional else 0.0
        if power == 0.0:
            sign, low, mag = "pos", 1.0, 1.0
        top = self.top(x, in_place=in_place, mag=mag, sign=sign, low=low)
        self.add("Power", [x], [top], {"power_param": p} if p else {})

    def gen_Exp(self):
        x = self.pick(mag_limit=1e9)
        if x is None:
            return
        rng = self.rng
        base = rng.choice([-1.0, -1.0, 2.0, 0.5, 10.0])
        ln = 1.0 if base == -1.0 else math.log(base)
        reach = rng.choice([1.0, 2.0, 3.0])  # |argument * ln(base)| at most this
        scale = reach / (max(x.mag, 1.0) * abs(ln)) * rng.choice([1, -1])
        shift = rng.choice([0.0, 0.0, 0.5 / abs(ln)])
        p = {"scale": scale}
        if base != -1.0:
            p["base"] = base
        if shift:
            p["shift"] = shift
        top_reach = reach + abs(shift * ln)
        top = self.top(x, in_place=self.may_in_place(x), mag=math.exp(top_reach), sign="pos",
                       low=math.exp(-top_reach))
        self.add("Exp", [x], [top], {"exp_param": p})

    def gen_Log(self):
        x = self.pick(lambda b: b.sign == "pos" and b.low >= 1e-3, mag_limit=1e9)
        if x is None:
            # Make a positive blob first: Log is only valid on one.
            y = self.pick(mag_limit=1e9)
            if y is None:
                return
            self.squash(y, force="Sigmoid")
            x = self.blobs[self.layers[-1].tops[0]]
            if x.low < 1e-3:
                return
        rng = self.rng
        base = rng.choice([-1.0, -1.0, 2.0, 10.0])
        scale = rng.choice([1.0, 1.0, 0.5, 3.0])
        shift = rng.choice([0.0, 0.0, 0.5])
        p = {}
        if base != -1.0:
            p["base"] = base
        if scale != 1.0:
            p["scale"] = scale
        if shift:
            p["shift"] = shift
        ln = 1.0 if base == -1.0 else math.log(base)
        lo, hi = shift + scale * x.low, shift + scale * x.mag
        mag = max(abs(math.log(lo)), abs(math.log(hi)), 1.0) / ln
        top = self.top(x, in_place=self.may_in_place(x), mag=mag, sign="any", low=0.0)
        self.add("Log", [x], [top], {"log_param": p} if p else {})

    def gen_Threshold(self):
        t = self.rng.choice([0.0, 0.5, -0.3, 1.0])
        self.unary("Threshold", {"threshold_param": {"threshold": t}} if t else {}, mag=1.0, sign="nonneg")

    def gen_Dropout(self):
        def params(x):
            p = {}
            if self.rng.random() < 0.6:
                p["dropout_ratio"] = self.rng.choice([0.5, 0.3, 0.0, 0.9])
            return {"dropout_param": p} if p else {}

        self.unary("Dropout", params)

    def gen_Softmax(self):
        x = self.pick(lambda b: b.rank >= 1, mag_limit=1e9)
        if x is None:
            return
        axis = self.rng.randrange(x.rank) if x.rank > 1 else 0
        if x.rank > 1 and self.rng.random() < 0.5:
            axis = 1
        p = {"softmax_param": {"axis": self.signed_axis(axis, x.rank)}} if axis != 1 or self.rng.random() < 0.2 else {}
        low = math.exp(-2 * min(x.mag, 40)) / x.shape[axis]
        self.add("Softmax", [x], [self.top(x, mag=1.0, sign="pos", low=low)], p)

    def gen_Concat(self):
        x = self.pick()
        if x is None:
            return
        rng = self.rng
        axis = rng.choice([1, 1, rng.randrange(x.rank)]) if x.rank > 1 else 0
        fits = [b for b in self.blobs.values() if b.rank == x.rank and not b.index and b.mag <= SQUASH_ABOVE
                and all(b.shape[i] == x.shape[i] for i in range(x.rank) if i != axis)]
        parts = [x] + [rng.choice(fits) for _ in range(rng.randint(1, 2))]
        shape = list(x.shape)
        shape[axis] = sum(b.shape[axis] for b in parts)
        if math.prod(shape) > MAX_ELEMENTS or shape[axis] > 64:
            return
        p = {}
        if axis != 1 or rng.random() < 0.2:
            if rng.random() < 0.1 and axis in (0, 1):
                p["concat_dim"] = axis
            else:
                p["axis"] = self.signed_axis(axis, x.rank)
        top = self.top(x, tuple(shape), mag=max(b.mag for b in parts), sign=_meet(parts), low=min(b.low for b in parts))
        self.add("Concat", parts, [top], {"concat_param": p} if p else {})

    def gen_Slice(self):
        x = self.pick(lambda b: max(b.shape[1:], default=0) >= 2 or (b.rank == 1 and b.shape[0] >= 2))
        if x is None:
            return
        rng = self.rng
        axes = [a for a in range(1, x.rank) if x.shape[a] >= 2]
        if not axes:
            return
        axis = rng.choice(axes)
        size = x.shape[axis]
        n_tops = rng.randint(2, min(4, size))
        p = {}
        if size % n_tops == 0 and rng.random() < 0.4:
            bounds = [size // n_tops * i for i in range(n_tops + 1)]
        else:
            points = sorted(rng.sample(range(1, size), n_tops - 1))
            p["slice_point"] = points
            bounds = [0] + points + [size]
        if axis != 1 or rng.random() < 0.2:
            if axis == 1 and rng.random() < 0.2:
                p["slice_dim"] = 1
            else:
                p["axis"] = self.signed_axis(axis, x.rank)
        tops = []
        for b0, b1 in zip(bounds, bounds[1:]):
            shape = list(x.shape)
            shape[axis] = b1 - b0
            tops.append(self.top(x, tuple(shape)))
        self.add("Slice", [x], tops, {"slice_param": p} if p else {})

    def gen_Split(self):
        x = self.pick()
        if x is None:
            return
        self.add("Split", [x], [self.top(x) for _ in range(self.rng.randint(1, 3))])

    def gen_Eltwise(self):
        x = self.pick()
        if x is None:
            return
        rng = self.rng
        same = [b for b in self.blobs.values() if b.shape == x.shape and not b.index and b.mag <= SQUASH_ABOVE]
        parts = [x] + [rng.choice(same) for _ in range(rng.choices([1, 2], [4, 1])[0])]
        op = rng.choice(["SUM", "SUM", "PROD", "MAX"])
        p = {}
        if op != "SUM" or rng.random() < 0.3:
            p["operation"] = Enum(op)
        mag = max(b.mag for b in parts)
        sign = _meet(parts)
        if op == "SUM":
            coeff = [1.0] * len(parts)
            if rng.random() < 0.3:
                coeff = [rng.choice([1.0, -1.0, 0.5, 2.0]) for _ in parts]
                p["coeff"] = coeff
                if any(c < 0 for c in coeff):
                    sign = "any"
            mag = sum(abs(c) * b.mag for c, b in zip(coeff, parts))
        elif op == "PROD":
            mag = math.prod(b.mag for b in parts)
            if mag > 200:
                return
            sign = sign if sign == "pos" else ("nonneg" if sign == "nonneg" else "any")
        top = self.top(x, mag=mag, sign=sign, low=math.prod(b.low for b in parts) if op == "PROD" else 0.0)
        if sign == "pos" and op == "SUM":
            top.low = sum(b.low for b in parts)
        elif sign == "pos" and op == "MAX":
            top.low = max(b.low for b in parts)
        self.add("Eltwise", parts, [top], {"eltwise_param": p} if p else {})

    def gen_BatchNorm(self):
        x = self.pick(lambda b: b.rank >= 2)
        if x is None:
            return
        p = {}
        if self.rng.random() < 0.4:
            p["eps"] = self.rng.choice([1e-5, 1e-3, 0.1])
        if self.rng.random() < 0.3:
            p["use_global_stats"] = True
        elif self.rng.random() < 0.15:
            p["use_global_stats"] = False  # in a TEST net: normalise by the batch's own moments
        if self.rng.random() < 0.2:
            p["moving_average_fraction"] = 0.9
        top = self.top(x, in_place=self.may_in_place(x), mag=(x.mag + 1.5) * 2.3, sign="any")
        self.add("BatchNorm", [x], [top], {"batch_norm_param": p} if p else {})

    def affine_axes(self, x):
        """(axis, num_axes, span) of a Scale/Bias parameter: axes from 1 on, or a scalar."""
        rng = self.rng
        if rng.random() < 0.1:
            return rng.randrange(x.rank), 0, ()
        axis = rng.randint(1, x.rank - 1)
        num_axes = rng.choice([1, 1, -1, 2])
        end = x.rank if num_axes == -1 else min(axis + num_axes, x.rank)
        num_axes = -1 if end == x.rank and num_axes == -1 else end - axis
        return axis, num_axes, x.shape[axis:end]

    def gen_Scale(self, bias=False):
        x = self.pick(lambda b: b.rank >= 2)
        if x is None:
            return
        rng = self.rng
        type_, key = ("Bias", "bias_param") if bias else ("Scale", "scale_param")
        p = {}
        # A second bottom holding the factors: any blob whose shape is a run of x's axes.
        runs = [(b, a) for b in self.blobs.values() for a in range(x.rank - b.rank + 1)
                if b.rank >= 1 and not b.index and b.mag <= SQUASH_ABOVE and b.shape == x.shape[a:a + b.rank]]
        if runs and rng.random() < 0.4:
            s, axis = rng.choice(runs)
            if axis != 1 or rng.random() < 0.3:
                p["axis"] = self.signed_axis(axis, x.rank)
            if not bias and rng.random() < (0.3 if axis else 0.03):
                p["bias_term"] = True  # over the batch axis a deliberate refusal
            mag = x.mag * s.mag + 3 if not bias else x.mag + s.mag
            top = self.top(x, in_place=s is not x and self.may_in_place(x), mag=mag, sign="any")
            self.add(type_, [x, s], [top], {key: p} if p else {})
            return
        axis, num_axes, _ = self.affine_axes(x)
        if axis != 1 or rng.random() < 0.2:
            p["axis"] = self.signed_axis(axis, x.rank)
        if num_axes != 1:
            p["num_axes"] = num_axes
        if not bias and rng.random() < 0.5:
            p["bias_term"] = True
        mag = (x.mag + 1) * 3 if not bias else x.mag + 3
        top = self.top(x, in_place=self.may_in_place(x), mag=mag, sign="any")
        self.add(type_, [x], [top], {key: p} if p else {})

    def gen_Bias(self):
        self.gen_Scale(bias=True)

    def gen_Flatten(self):
        x = self.pick(lambda b: b.rank >= 2)
        if x is None:
            return
        rng = self.rng
        start = rng.randint(1, x.rank - 1) if rng.random() < 0.8 else 0
        end = rng.randint(start, x.rank - 1) if rng.random() < 0.4 else x.rank - 1
        p = {}
        if start != 1:
            p["axis"] = self.signed_axis(start, x.rank)
        if end != x.rank - 1 or rng.random() < 0.2:
            p["end_axis"] = self.signed_axis(end, x.rank)
        shape = x.shape[:start] + (math.prod(x.shape[start:end + 1]),) + x.shape[end + 1:]
        self.add("Flatten", [x], [self.top(x, shape)], {"flatten_param": p} if p else {})

    def gen_Reshape(self):
        x = self.pick()
        if x is None:
            return
        rng = self.rng
        rank = x.rank
        # Caffe replaces axes [axis, end) by the new dims; 0 copies the bottom's axis, -1 infers.
        axis = rng.choice([0, 0, 1, rng.randint(0, rank)])
        end = rank if rng.random() < 0.6 else rng.randint(axis, rank)
        span = x.shape[axis:end]
        total = math.prod(span)
        if axis == 0 and span and rng.random() < 0.85:
            rest = total // x.shape[0]
            dims = [x.shape[0]] + _factor(rest, rng.randint(0 if rest == 1 else 1, 3), rng)  # keep the batch
        else:
            dims = _factor(total, rng.randint(0 if total == 1 else 1, 4), rng)
        shape = x.shape[:axis] + tuple(dims) + x.shape[end:]
        if not 1 <= len(shape) <= 6:
            return
        spec = [0 if axis + i < rank and x.shape[axis + i] == d and rng.random() < 0.4 else d
                for i, d in enumerate(dims)]
        if spec and rng.random() < 0.5:
            spec[rng.randrange(len(spec))] = -1
        p = {"shape": {"dim": spec}}
        if axis != 0:
            p["axis"] = axis if rng.random() < 0.6 else axis - rank - 1
        if end != rank:
            p["num_axes"] = end - axis
        self.add("Reshape", [x], [self.top(x, shape)], {"reshape_param": p})

    def gen_Crop(self):
        x = self.pick(lambda b: b.rank >= 2)
        if x is None:
            return
        rng = self.rng
        axis = rng.randint(1, x.rank - 1) if rng.random() < 0.5 else min(2, x.rank - 1)
        refs = [b for b in self.blobs.values() if b.rank == x.rank and not b.index
                and all(b.shape[i] <= x.shape[i] for i in range(axis, x.rank))]
        ref = rng.choice(refs) if refs else x
        slack = [x.shape[i] - ref.shape[i] for i in range(axis, x.rank)]
        p = {}
        form = rng.random()
        if form < 0.45 and form >= 0.2:
            p["offset"] = [rng.randint(0, min(slack))]
        elif form >= 0.45:
            p["offset"] = [rng.randint(0, s) for s in slack]
        if axis != 2 or rng.random() < 0.2:
            p["axis"] = self.signed_axis(axis, x.rank)
        shape = x.shape[:axis] + ref.shape[axis:]
        self.add("Crop", [x, ref], [self.top(x, shape)], {"crop_param": p} if p else {})

    def gen_Permute(self):
        x = self.pick(lambda b: b.rank >= 2)
        if x is None:
            return
        rng = self.rng
        rest = list(range(1, x.rank))
        rng.shuffle(rest)
        given = [0] + rest
        if rng.random() < 0.4:
            given = given[: rng.randint(1, x.rank)]
        order = given + [a for a in range(x.rank) if a not in given]  # Caffe appends the rest in order
        shape = tuple(x.shape[a] for a in order)
        self.add("Permute", [x], [self.top(x, shape)],
                 {"permute_param": {"order": given}})

    def gen_MVN(self):
        x = self.pick(lambda b: 2 <= b.rank <= 4)
        if x is None:
            return
        p = self.maybe({}, {"normalize_variance": (0.4, False), "across_channels": (0.4, True),
                            "eps": (0.3, self.choice(1e-3, 1e-6))})
        shape = x.shape + (1,) * (4 - x.rank)  # Caffe reshapes the top to (num, channels, height, width)
        self.add("MVN", [x], [self.top(x, shape, mag=max(x.mag * 2, 6.0), sign="any")], {"mvn_param": p} if p else {})

    def gen_Reduction(self):
        x = self.pick(lambda b: b.rank >= 2)
        if x is None:
            return
        rng = self.rng
        axis = rng.randint(1, x.rank - 1)
        op = rng.choice(["SUM", "ASUM", "SUMSQ", "MEAN"])
        coeff = rng.choice([1.0, 1.0, 0.5, -2.0])
        count = math.prod(x.shape[axis:])
        p = {"operation": Enum(op)} if op != "SUM" or rng.random() < 0.3 else {}
        if axis != 0 or rng.random() < 0.3:
            p["axis"] = self.signed_axis(axis, x.rank)
        if coeff != 1.0:
            p["coeff"] = coeff
        if op == "SUMSQ":
            mag = x.mag * x.mag * count
        elif op == "MEAN":
            mag = x.mag
        else:
            mag = x.mag * count
        mag *= abs(coeff)
        sign = "any" if coeff < 0 or op in ("SUM", "MEAN") else "nonneg"
        if op in ("SUM", "MEAN") and x.sign != "any" and coeff > 0:
            sign = "nonneg"
        top = self.top(x, x.shape[:axis], mag=mag, sign=sign, low=0.0)
        self.add("Reduction", [x], [top], {"reduction_param": p} if p else {})

    def gen_ArgMax(self):
        x = self.pick()
        if x is None:
            return
        rng = self.rng
        p = {}
        out_max_val = rng.random() < 0.4
        if out_max_val:
            p["out_max_val"] = True
        if rng.random() < 0.3:
            k = rng.randint(1, min(3, x.count // x.shape[0]))
            if k > 1:
                p["top_k"] = k
            # Without an axis Caffe's top keeps the bottom's rank, at least 3: (N, 1 or 2, K, 1, ...).
            shape = (x.shape[0], 2 if out_max_val else 1, k) + (1,) * (x.rank - 3 if x.rank > 3 else 0)
            self.add("ArgMax", [x], [self.top(x, shape, mag=max(x.mag, x.count), sign="any")], {"argmax_param": p})
            return
        axis = rng.randrange(x.rank) if rng.random() < 0.2 else rng.randint(min(1, x.rank - 1), x.rank - 1)
        if axis == 0:
            axis = min(1, x.rank - 1)
        k = rng.randint(1, min(3, x.shape[axis]))
        if k > 1:
            p["top_k"] = k
        p["axis"] = axis
        shape = x.shape[:axis] + (k,) + x.shape[axis + 1:]
        mag = x.mag if out_max_val else x.shape[axis]
        self.add("ArgMax", [x], [self.top(x, shape, mag=mag, sign=x.sign if out_max_val else "nonneg")],
                 {"argmax_param": p})

    def gen_Tile(self):
        x = self.pick(lambda b: b.rank >= 2)
        if x is None:
            return
        axis = self.rng.randint(1, x.rank - 1)
        tiles = self.rng.randint(1, 3)
        shape = list(x.shape)
        shape[axis] *= tiles
        if math.prod(shape) > MAX_ELEMENTS:
            return
        p = {"tiles": tiles}
        if axis != 1 or self.rng.random() < 0.3:
            p["axis"] = self.signed_axis(axis, x.rank)
        self.add("Tile", [x], [self.top(x, tuple(shape))], {"tile_param": p})

    def gen_Embed(self, x=None):
        if x is None:
            candidates = [b for b in self.blobs.values() if b.index]
            if not candidates:
                return
            x = self.rng.choice(candidates)
        rng = self.rng
        out = rng.randint(1, 8)
        p = {"num_output": out, "input_dim": x.index + rng.choice([0, 0, 2])}
        if rng.random() < 0.3:
            p["bias_term"] = False
        shape = x.shape + (out,)
        self.add("Embed", [x], [Blob(self.fresh("embed"), shape, mag=4.0)],
                 {"embed_param": p})

    def gen_Silence(self):
        x = self.pick(mag_limit=1e9)
        if x is None:
            return
        self.add("Silence", [x], [])

    def gen_TrainOnly(self):
        """A layer of the TRAIN phase only: Caffe's TEST net leaves it out."""
        x = self.pick(mag_limit=1e9)
        if x is None:
            return
        self.add("ReLU", [x], [Blob(self.fresh("train_only"), x.shape)], phase="TRAIN")

    def gen_Normalize(self):
        x = self.pick(lambda b: b.rank == 4)
        if x is None:
            return
        p = self.maybe({}, {"across_spatial": (0.5, False), "channel_shared": (0.5, False), "eps": (0.3, 1e-6)})
        top = self.top(x, mag=4.0, sign="any")
        self.add("Normalize", [x], [top], {"norm_param": p} if p else {})

    def gen_Upsample(self):
        x = self.pick(lambda b: b.rank == 4 and b.count * 4 <= MAX_ELEMENTS)
        if x is None:
            return
        scale = self.rng.choice([None, 2, 2, 3])
        n, c, h, w = x.shape
        s = scale or 1
        if n * c * h * w * s * s > MAX_ELEMENTS:
            return
        self.add("Upsample", [x], [self.top(x, (n, c, h * s, w * s))],
                 {"upsample_param": {"scale": scale}} if scale else {})

    def gen_Pad(self):
        x = self.pick(lambda b: b.rank == 4)
        if x is None:
            return
        rng = self.rng
        up, down, left, right = (rng.randint(0, 2) for _ in range(4))
        p = {"pad_u": up, "pad_d": down, "pad_l": left, "pad_r": right}
        value = rng.choice([0.0, 0.0, 1.5, -2.0])
        if value:
            p["pad_value"] = value
        n, c, h, w = x.shape
        # The padding's value joins the blob's: a 0 border makes a positive blob only non-negative.
        sign = _meet([x, Blob("", (), sign="pos" if value > 0 else "nonneg" if value == 0 else "any")])
        top = self.top(x, (n, c, h + up + down, w + left + right), mag=max(x.mag, abs(value)), sign=sign,
                       low=min(x.low, value) if sign == "pos" else 0.0)
        self.add("Pad", [x], [top], {"pad_param": p})

    def gen_PixelShuffle(self):
        x = self.pick(lambda b: b.rank == 4 and (b.shape[1] % 4 == 0 or b.shape[1] % 9 == 0))
        if x is None:
            return
        n, c, h, w = x.shape
        r = 2 if c % 4 == 0 else 3
        self.add("PixelShuffle", [x], [self.top(x, (n, c // (r * r), h * r, w * r))],
                 {"pixelshuffle_param": {"upscale_factor": r}})

    def gen_BilinearInterpolate(self):
        # With align_corners Caffe divides by dst - 1: a 1-wide output is NaN. A 1-wide input (a
        # bottom of fewer axes is read as N x C x 1 x 1) makes Caffe read the element before it,
        # with weight 0: the right value, unless that memory holds a NaN.
        x = self.pick(lambda b: b.rank == 4 and min(b.shape[2:]) >= 2)
        if x is None:
            return
        rng = self.rng
        n, c, h, w = x.shape
        align = rng.choice([None, True, False])
        least = 1 if align is False else 2
        form = rng.random()
        if form < 0.2:
            scale = rng.choice([0.5, 1.5, 2.0, 0.75])
            dh, dw = int(np.float32(h) * np.float32(scale)), int(np.float32(w) * np.float32(scale))
            p = {"scale_factor": scale}
        else:
            dh, dw = rng.randint(least, 2 * h + 1), rng.randint(least, 2 * w + 1)
            p = {"dst_h": dh, "dst_w": dw}
            if form < 0.3:
                del p["dst_w"]
                dw = w
        if n * c * dh * dw > MAX_ELEMENTS or min(dh, dw) < least:
            return
        if align is not None:
            p["align_corners"] = align
        self.add("BilinearInterpolate", [x], [self.top(x, (n, c, dh, dw))],
                 {"bilinear_interpolate_param": p})

    def gen_PriorBox(self):
        x = self.pick(lambda b: b.rank == 4)
        image = self.pick(lambda b: b.rank == 4)
        if x is None or image is None:
            return
        rng = self.rng
        _, _, h, w = x.shape
        p = {"min_size": [float(rng.choice([2, 4, 7.5, 35.84]))]}
        if rng.random() < 0.3:
            p["min_size"].append(float(rng.choice([3, 9.6])))
        if rng.random() < 0.5:
            p["max_size"] = [m + rng.choice([3.0, 8.5]) for m in p["min_size"]]
        ratios = rng.sample([2.0, 3.0, 0.5], rng.randint(0, 2))
        if ratios:
            p["aspect_ratio"] = ratios
        flip = rng.random() < 0.6
        if not flip:
            p["flip"] = False
        # Forks disagree on clip's default (SSD: false, the oracle's fork: true): always say it.
        p["clip"] = rng.random() < 0.4
        if rng.random() < 0.6:
            p["variance"] = [0.1, 0.1, 0.2, 0.2] if rng.random() < 0.7 else [0.1]
        form = rng.random()
        if form < 0.2:
            p["step"] = float(rng.choice([2, 4, 2.5]))
        elif form < 0.3:
            p["step_h"], p["step_w"] = float(rng.choice([2, 3])), float(rng.choice([1.5, 4]))
        form = rng.random()
        if form < 0.15:
            p["img_size"] = rng.choice([10, 32])
        elif form < 0.25:
            p["img_h"], p["img_w"] = rng.choice([10, 32]), rng.choice([7, 20])
        if rng.random() < 0.2:
            p["offset"] = 0.25
        distinct = [1.0]
        for ar in ratios:
            if all(abs(ar - r) > 1e-6 for r in distinct):
                distinct.append(ar)
                if flip:
                    distinct.append(1.0 / ar)
        per_cell = (len(distinct) + (1 if "max_size" in p else 0)) * len(p["min_size"])
        shape = (1, 2, h * w * per_cell * 4)
        if math.prod(shape) > MAX_ELEMENTS:
            return
        # Box corners over the image size: far outside [0, 1] for a small image and big boxes.
        img = (p.get("img_h", p.get("img_size", image.shape[2])), p.get("img_w", p.get("img_size", image.shape[3])))
        steps = (p.get("step_h", p.get("step", img[0] / h)), p.get("step_w", p.get("step", img[1] / w)))
        half = max(p.get("max_size", p["min_size"])) * 0.9  # sqrt(3) / 2 of the widest box
        mag = 1.0 if p["clip"] else max((size * step + half) / extent for size, step, extent in zip((h, w), steps, img))
        self.add("PriorBox", [x, image], [Blob(self.fresh("priors"), shape, mag=mag + 1, sign="any")],
                 {"prior_box_param": p})

    # --- patterns of real nets ----------------------------------------------------------

    def gen_SE(self):
        """Squeeze-and-excitation: global pool, two InnerProducts, Sigmoid, Scale by a 2-D blob."""
        x = self.pick(lambda b: b.rank == 4)
        if x is None:
            return
        n, c, _, _ = x.shape
        pooled = Blob(self.fresh("se_pool"), (n, c, 1, 1), mag=x.mag, sign=x.sign)
        self.add("Pooling", [x], [pooled], {"pooling_param": {"pool": Enum("AVE"), "global_pooling": True}})
        hidden = Blob(self.fresh("se_fc"), (n, max(1, c // 2)), mag=x.mag * 1.5 + 2.5)
        self.add("InnerProduct", [pooled], [hidden], {"inner_product_param": {"num_output": hidden.shape[1]}})
        gate_in = Blob(self.fresh("se_fc"), (n, c), mag=hidden.mag * 1.5 + 2.5)
        self.add("InnerProduct", [hidden], [gate_in], {"inner_product_param": {"num_output": c}})
        gate = Blob(gate_in.name, (n, c), mag=1.0, sign="pos", low=0.0)
        self.add("Sigmoid", [gate_in], [gate])
        self.add("Scale", [x, gate], [self.top(x, mag=x.mag)], {"scale_param": {"axis": 0}})

    def gen_Residual(self):
        """conv-bn-relu-conv + identity: Eltwise SUM of a shape-preserving branch."""
        x = self.pick(lambda b: b.rank == 4)
        if x is None:
            return
        n, c, h, w = x.shape
        y = Blob(self.fresh("res_conv"), x.shape, mag=x.mag * 1.5 + 2.5)
        self.add("Convolution", [x], [y], {"convolution_param": {"num_output": c, "kernel_size": [3], "pad": [1]}})
        if self.rng.random() < 0.5:
            self.add("BatchNorm", [y], [y])
            self.add("Scale", [y], [y], {"scale_param": {"bias_term": True}})
            y.mag = (y.mag + 1.5) * 7
        self.add("ReLU", [y], [y])
        out = Blob(self.fresh("res_sum"), x.shape, mag=x.mag + y.mag)
        self.add("Eltwise", [x, y], [out])


def _meet(blobs):
    signs = {b.sign for b in blobs}
    if signs == {"pos"}:
        return "pos"
    if signs <= {"pos", "nonneg"}:
        return "nonneg"
    return "any"


def _factor(total, parts, rng):
    """``total`` as a product of ``parts`` random factors (in random order)."""
    if parts == 0:
        return []
    dims = []
    rest = total
    for _ in range(parts - 1):
        divisors = [d for d in range(1, rest + 1) if rest % d == 0]
        d = rng.choice(divisors)
        dims.append(d)
        rest //= d
    dims.append(rest)
    rng.shuffle(dims)
    return dims


def pool_out(size, kernel, stride, pad, ceil):
    """Caffe's pooled size: rounded up or down, then a last window starting in the padding dropped."""
    span = size + 2 * pad - kernel
    pooled = (-(-span // stride) if ceil else span // stride) + 1
    if pad and (pooled - 1) * stride >= size + pad:
        pooled -= 1
    return pooled


def with_inputs_as_arrays(net, values):
    """``net`` with every input holding fixed values (the shrinker's starting point)."""
    inputs = [replace(i, kind=("array", np.asarray(values[i.name], np.float32))) for i in net.inputs]
    return replace(net, inputs=inputs)
