"""Each generated net through real Caffe and through the converter, compared tensor by tensor.

Caffe runs many nets per process (``tools/caffe_oracle``) with seeded random weights (its
``randomize``: learned blobs and BatchNorm statistics) and writes the caffemodel it ran with; the
converter then builds that prototxt and caffemodel, and every layer top and every network output
is compared with Caffe's at the project tolerance ``1e-4 * max(1, max|caffe|)`` (tests/helpers.py).

An outcome's ``status`` is one of:

- ``ok``: every tensor within tolerance, Caffe's outputs among the model's;
- ``caffe_refused``: Caffe did not take the net: a bug of the generator, which must only make
  valid nets;
- ``converter_refused``: the converter raised on a net Caffe runs (``refused_deliberately`` when
  the refusal is one the README documents);
- ``mismatch``: a tensor differs, has another shape, is missing, or the outputs differ;
- ``unstable``: every differing tensor is either computed by an ill-conditioned function at
  Caffe's own bottom values, with the converter's answer within what their rounding allows, at
  every differing element (a Threshold input within rounding of the threshold, ArgMax candidates
  or MAX pooling maxima within rounding of each other, a Reduction sum far smaller than its terms,
  MVN over a nearly constant group, BatchNorm with the batch's statistics of a nearly constant
  channel), or computed from such a tensor: no implementation in float32
  is bound to agree there, so it is counted apart, with the evidence. Any other differing tensor
  of the net makes it a mismatch;

``signature`` says what failed (status and the failing layer's type); the shrinker keeps it.
"""

import re
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

TESTS = Path(__file__).resolve().parent.parent
REPO = TESTS.parent
for extra in (TESTS, REPO / "tools"):
    if str(extra) not in sys.path:
        sys.path.insert(0, str(extra))

import caffe_oracle  # noqa: E402

from . import generate  # noqa: E402

RTOL = 1e-4
CHUNK = 40  # nets per Caffe process

# Refusals the README documents as deliberate ("Refused on purpose"): (pattern of the message, why).
DELIBERATE = [
    (r"with a learned parameter over the batch axis is not supported", "its size would fix the batch"),
    (r"cropping the batch axis is not supported|moves the batch axis", "the batch axis stays put"),
    (r"BilinearInterpolate with align_corners divides by the output size", "Caffe divides by zero"),
]


@dataclass
class Outcome:
    net: object
    status: str
    detail: str = ""
    max_rel: float = 0.0  # worst max|ours - caffe| / max(1, max|caffe|) over every compared tensor
    layer: str = None  # the first failing layer (execution order)
    layer_type: str = None
    compared: int = 0
    largest: float = 0.0  # max |value| of any blob Caffe computed (inf: a NaN or inf among them)
    worst: str = ""  # the tensor with the largest relative error, and its layer's type
    notes: list = field(default_factory=list)  # generator shape beliefs Caffe contradicted

    @property
    def signature(self):
        """What failed: the status, the failing layer's type and, for a refusal, its reason."""
        reason = None
        if self.status in ("converter_refused", "caffe_refused") or self.layer_type is None:
            reason = re.sub(r"-?\d[\d.e+-]*|'[^']*'", "#", self.detail.split(": ", 1)[-1])[:120]
        return (self.status, self.layer_type, reason)


def oracle_available():
    return caffe_oracle.interpreter() is not None


def caffe_forward(nets, workdir):
    """Caffe's results for ``nets`` (Result or OracleError each); weights saved as
    ``<i>.caffemodel`` (or ``<i>.caffemodel.h5``, see :func:`weights_path`)."""
    workdir = Path(workdir)
    jobs = []
    for i, net in enumerate(nets):
        jobs.append(caffe_oracle.Job(
            prototxt=net.prototxt(), inputs=net.input_values(), seed=net.seed % 2**31, randomize=True,
            save_weights=str(weights_path(workdir, i, net)), every_layer=True,
        ))
    results = []
    for start in range(0, len(jobs), CHUNK):
        results.extend(caffe_oracle.forward(jobs[start : start + CHUNK]))
    return results


def weights_path(workdir, i, net):
    return Path(workdir) / (f"{i}.caffemodel.h5" if net.weights == "h5" else f"{i}.caffemodel")


def evaluate(nets, workdir=None):
    """One :class:`Outcome` per net."""
    with tempfile.TemporaryDirectory(prefix="c2k-diff-") as tmp:
        workdir = Path(workdir or tmp)
        workdir.mkdir(parents=True, exist_ok=True)
        results = caffe_forward(nets, workdir)
        outcomes = []
        for i, (net, result) in enumerate(zip(nets, results)):
            if isinstance(result, caffe_oracle.OracleError):
                outcomes.append(Outcome(net, "caffe_refused", str(result)))
                continue
            proto = workdir / f"{i}.prototxt"
            proto.write_text(net.prototxt())
            outcomes.append(compare(net, result, proto, weights_path(workdir, i, net)))
        _release_keras()
        return outcomes


def _release_keras():
    import keras

    keras.backend.clear_session()


def compare(net, result, prototxt, caffemodel):
    """Convert one net and compare it with Caffe's ``result``."""
    from caffe2keras import api
    from caffe2keras.errors import ConversionError
    from helpers import _by_layer, blob_values, max_error, run_outputs

    notes = _shape_beliefs(net, result)
    largest = _largest(result)
    try:
        conversion = api.build(str(prototxt), str(caffemodel))
    except ConversionError as err:
        message = str(err)
        for pattern, why in DELIBERATE:
            if re.search(pattern, message):
                return Outcome(net, "refused_deliberately", f"{message} ({why})", notes=notes, largest=largest)
        return Outcome(net, "converter_refused", message, layer=err.layer, layer_type=_type_of(result, err.layer),
                       notes=notes, largest=largest)

    inputs = {name: result.arrays["input/" + name] for name in result.inputs}
    graph = conversion.graph
    try:
        by_id = blob_values(conversion, inputs)
        outputs = run_outputs(conversion, inputs)
    except Exception as err:  # noqa: BLE001 - a model that does not run on valid input is a finding
        return Outcome(net, "mismatch", f"the converted model failed to run: {type(err).__name__}: {err}"[:500],
                       notes=notes, largest=largest)
    ours = _by_layer(graph, by_id)
    nodes = {node.name: node for node in graph.nodes}

    outcome = Outcome(net, "ok", notes=notes, largest=largest)
    failures = {}  # (layer, top) -> what differs
    for layer in result.layers:
        if layer["name"] not in nodes:
            continue  # Input layers, Caffe's own *_split layers, Silence
        for top in layer["tops"]:
            expected = result.arrays.get(f"layer/{layer['name']}/{top}")
            if expected is None:
                continue
            key = (layer["name"], top)
            outcome.compared += 1
            if key not in ours:
                failures[key] = f"{layer['name']}/{top}: missing from the converted model"
                continue
            got = ours[key]
            if got.shape != expected.shape:
                failures[key] = f"{layer['name']}/{top}: shape {list(got.shape)}, Caffe's {list(expected.shape)}"
                continue
            rel = max_error(got, expected) / max(1.0, float(np.abs(expected).max()) if expected.size else 0.0)
            if rel > outcome.max_rel:
                outcome.max_rel, outcome.worst = rel, f"{layer['name']}/{top} ({layer['type']})"
            if rel > RTOL:
                failures[key] = f"{layer['name']}/{top}: max rel error {rel:.3g}"

    silenced = {b for layer in net.layers if layer.type == "Silence" for b in layer.bottoms}
    missing = sorted(set(result.outputs) - set(outputs))
    extra = sorted(set(outputs) - set(result.outputs) - silenced)
    output_failures = {}  # output blob -> what differs
    if missing or extra:
        output_failures[None] = f"model outputs {sorted(outputs)}, Caffe's {sorted(result.outputs)}"
    for name in sorted(set(outputs) & set(result.outputs)):
        expected = result.arrays["output/" + name]
        got = outputs[name]
        if got.shape != expected.shape:
            output_failures[name] = f"output {name}: shape {list(got.shape)}, Caffe's {list(expected.shape)}"
            continue
        outcome.compared += 1
        rel = max_error(got, expected) / max(1.0, float(np.abs(expected).max()) if expected.size else 0.0)
        outcome.max_rel = max(outcome.max_rel, rel)
        if rel > RTOL:
            output_failures[name] = f"output {name}: max rel error {rel:.3g}"

    real, excused = _excuse(failures, output_failures, result, caffe_values=_caffe_values(result), by_id=by_id,
                            nodes=nodes)
    if real:
        layer, message = real[0]
        outcome.status = "mismatch"
        outcome.layer, outcome.layer_type = (layer["name"], layer["type"]) if layer else (None, "outputs")
        outcome.detail = message + (f" (+{len(real) - 1} more tensors)" if len(real) > 1 else "")
    elif excused:
        (layer, message, why), downstream = excused[0], len(excused) - 1
        outcome.status = "unstable"
        outcome.layer, outcome.layer_type = layer["name"], layer["type"]
        outcome.detail = f"{message}; {why}" + (f" (+{downstream} tensors computed from it)" if downstream else "")
    return outcome


def _largest(result):
    largest = 0.0
    for value in result.arrays.values():
        if value.size:
            if not np.isfinite(value).all():
                return float("inf")
            largest = max(largest, float(np.abs(value).max()))
    return largest


def _type_of(result, layer_name):
    for layer in result.layers:
        if layer["name"] == layer_name:
            return layer["type"]
    return None


def _shape_beliefs(net, result):
    """Where Caffe's top shapes differ from what the generator believed (its own bug to fix)."""
    caffe = {(layer["name"], top): tuple(shape) for layer in result.layers for top, shape in layer["tops"].items()}
    return [f"{layer}/{top}: generator expected {list(shape)}, Caffe made {list(caffe[(layer, top)])}"
            for (layer, top), shape in net.shapes.items() if (layer, top) in caffe and caffe[(layer, top)] != shape]


def _caffe_values(result):
    """For each layer, Caffe's values of its bottoms right before it ran: ``{layer: [arrays]}``."""
    current = {name: result.arrays["input/" + name] for name in result.inputs}
    before = {}
    for layer in result.layers:
        before[layer["name"]] = [current.get(b) for b in layer["bottoms"]]
        for top in layer["tops"]:
            value = result.arrays.get(f"layer/{layer['name']}/{top}")
            if value is not None:
                current[top] = value
    return before


def _excuse(failures, output_failures, result, caffe_values, by_id, nodes):
    """Split the differing tensors into real mismatches ``[(layer or None, message)]`` and excused
    ones ``[(layer, message, why)]``, in execution order.

    A tensor is excused when its own layer is ill-conditioned at Caffe's bottom values and the
    converter's answer is within that rounding (:func:`_unstable`), or when it is computed from an
    excused tensor (what follows an ill-conditioned choice may differ by anything). Every other
    differing tensor, in the same net too, stays a mismatch.
    """
    real, excused, tainted = [], [], set()
    for layer in result.layers:
        downstream = any(b in tainted for b in layer["bottoms"])
        for top in layer["tops"]:
            message = failures.get((layer["name"], top))
            if downstream:
                tainted.add(top)
                if message:
                    excused.append((layer, message, "computed from an ill-conditioned tensor"))
                continue
            tainted.discard(top)  # a new value of that blob
            if not message:
                continue
            why = _unstable(layer, top, caffe_values, by_id, nodes[layer["name"]], result)
            if why:
                tainted.add(top)
                excused.append((layer, message, why))
            else:
                real.append((layer, message))
    for name, message in output_failures.items():
        if name not in tainted:
            real.append((None, message))
    return real, excused


ROUNDING = 1e-6  # relative rounding of a float32 value that went through a few operations (~8 ulps)


def _unstable(layer, top, caffe_values, by_id, node, result):
    """Why ``top`` of the first differing layer is ill-conditioned at Caffe's own bottoms, or None.

    Each rule checks every differing element: the converter's answer there must be one that the
    rounding of the bottoms (float32's own, plus how far the converter's bottoms are from Caffe's:
    ``slack``) could give; one element outside that makes the tensor a mismatch.
    """
    bottoms = caffe_values.get(layer["name"]) or []
    if not bottoms or bottoms[0] is None:
        return None
    expected = result.arrays[f"layer/{layer['name']}/{top}"]
    index = list(layer["tops"]).index(top)
    ours = by_id.get(node.tops[index])
    if ours is None or ours.shape != expected.shape:
        return None
    x = bottoms[0].astype(np.float64)
    ours_x = by_id.get(node.bottoms[0])
    same = ours_x is not None and ours_x.shape == x.shape
    ours_x = ours_x.astype(np.float64) if same else x
    drift = np.abs(ours_x - x)
    slack = 2 * drift + ROUNDING * max(1.0, float(np.abs(x).max()))
    err = np.abs(ours.astype(np.float64) - expected)
    wrong = err > RTOL * max(1.0, float(np.abs(expected).max()) if expected.size else 0.0)
    p = node.param
    if layer["type"] == "Threshold":
        t = p.threshold_param.threshold
        if np.all(np.abs(x - t)[wrong] <= slack[wrong]):
            return f"Threshold input within rounding of {t} at {int(wrong.sum())} position(s)"
    if layer["type"] == "ArgMax":
        # Excused when the converter's indices are Caffe's rule (value, then larger index, first)
        # applied to the converter's own bottom, and Caffe's values at them are, rank by rank,
        # within rounding of Caffe's values at its own: only rounding reordered them.
        q, k = p.argmax_param, p.argmax_param.top_k
        if q.HasField("axis"):
            if q.out_max_val:
                return None  # the values alone: well-conditioned

            def along(a):
                return np.moveaxis(a, q.axis % x.ndim, -1)

            caffe_index, ours_index = along(expected), along(ours)
        else:
            # (N, 1 or 2, k, 1, ...) over each item's values: indices, then the values, which must match.
            if q.out_max_val and wrong[:, 1].any():
                return None

            def along(a):
                return a.reshape(a.shape[0], -1)

            caffe_index, ours_index = along(expected[:, 0]), along(ours[:, 0])
        values, ours_values = along(x), along(ours_x)
        size = values.shape[-1]
        caffe_index, ours_index = np.rint(caffe_index).astype(int), np.rint(ours_index).astype(int)
        if ours_index.min() < 0 or ours_index.max() >= size:
            return None
        positions = np.broadcast_to(np.arange(size), values.shape)
        rule = np.lexsort((-positions, -ours_values), axis=-1)[..., :k]
        if not np.array_equal(rule, ours_index):
            return None  # the converter's own order is not Caffe's rule
        gap = np.abs(np.take_along_axis(values, caffe_index, -1) - np.take_along_axis(values, ours_index, -1))
        if np.all(gap <= along(slack).max(axis=-1, keepdims=True)):
            return f"ArgMax candidates within rounding of each other at {int(along(wrong).any(axis=-1).sum())} position(s)"
    if layer["type"] == "Pooling" and index == 1 and x.ndim == 4:
        # The MAX mask (the pooled values themselves are well-conditioned and must match).
        plane = x.reshape(x.shape[0], x.shape[1], -1)
        ours_plane = ours_x.reshape(plane.shape)
        near = slack.reshape(plane.shape)
        for n, c, h, w in np.argwhere(ours != expected):
            a, b = int(expected[n, c, h, w]), int(ours[n, c, h, w])
            if not 0 <= b < plane.shape[2]:
                return None
            gap = abs(plane[n, c, a] - plane[n, c, b])
            if gap > max(near[n, c, a], near[n, c, b]) or gap == 0 and ours_plane[n, c, a] == ours_plane[n, c, b]:
                return None  # maxima apart, or tied in both (Caffe takes the first)
        return "MAX pooling mask: window maxima within rounding of each other"
    if layer["type"] == "Reduction" and p.reduction_param.operation in (p.reduction_param.SUM,
                                                                        p.reduction_param.MEAN):
        # A sum far smaller than its terms keeps only their rounding: the terms' own error
        # (drift) and float32's, summed.
        axis = p.reduction_param.axis % x.ndim
        flat_x = np.abs(x).reshape(x.shape[:axis] + (-1,))
        bound = (flat_x.sum(axis=-1) * ROUNDING + drift.reshape(flat_x.shape).sum(axis=-1)) * abs(p.reduction_param.coeff)
        if p.reduction_param.operation == p.reduction_param.MEAN:
            bound = bound / flat_x.shape[-1]
        if np.all(err.reshape(bound.shape)[wrong.reshape(bound.shape)] <= 2 * bound[wrong.reshape(bound.shape)]):
            return "Reduction cancels: its result is within the rounding of its terms"
    if layer["type"] == "BatchNorm" and p.batch_norm_param.HasField("use_global_stats") \
            and not p.batch_norm_param.use_global_stats:
        # The batch's own statistics: y = (x - m) / sqrt(v + eps) per channel, so an error d in x
        # moves y by about d (1 + |y|) / sqrt(v + eps) (a nearly constant channel: d / sqrt(eps)).
        def by_channel(a):
            return np.moveaxis(a, 1, 0).reshape(x.shape[1], -1)

        s = np.sqrt(by_channel(x).var(axis=-1) + p.batch_norm_param.eps)
        bound = 2 * by_channel(slack).max(axis=-1) * (1 + by_channel(np.abs(expected)).max(axis=-1)) / s
        at = by_channel(wrong)
        if np.all(by_channel(err)[at] <= np.broadcast_to(bound[:, None], at.shape)[at]):
            return "BatchNorm of a nearly constant channel: the difference is within its std's rounding"
    if layer["type"] == "MVN" and p.mvn_param.normalize_variance:
        # y = (x - m) / s: an error d in x moves y by about d (1 + |y|) / s; Caffe's variance,
        # E[x^2] - m^2, carries float32's rounding of E[x^2] besides.
        first = 1 if p.mvn_param.across_channels else 2
        groups = x.reshape(x.shape[:first] + (-1,)) if x.ndim > first else x.reshape(x.shape + (1,))
        s = groups.std(axis=-1)
        noise = slack.reshape(groups.shape).max(axis=-1) + ROUNDING * (groups**2).mean(axis=-1) / np.maximum(s, 1e-30)
        y = np.abs(expected).reshape(groups.shape).max(axis=-1)
        with np.errstate(divide="ignore", invalid="ignore"):
            bound = 2 * noise * (1 + y) / s
        at = wrong.reshape(groups.shape)
        if np.all(err.reshape(groups.shape)[at] <= np.broadcast_to(bound[..., None], groups.shape)[at]):
            return "MVN over a nearly constant group: the difference is within its std's rounding"
    return None


# --- running many ---------------------------------------------------------------------------


@dataclass
class Tally:
    counts: dict = field(default_factory=dict)
    max_rel: float = 0.0
    failures: list = field(default_factory=list)  # outcomes that are not ok
    generator_notes: list = field(default_factory=list)
    unstable: dict = field(default_factory=dict)  # ill-conditioned layer type -> nets excused by it
    largest: float = 0.0  # max |value| Caffe computed in any net
    largest_net: str = ""
    worst: str = ""  # where the largest relative error among passing nets is
    seconds: float = 0.0
    nets: int = 0

    def add(self, outcome):
        self.nets += 1
        self.counts[outcome.status] = self.counts.get(outcome.status, 0) + 1
        if outcome.largest > self.largest:
            self.largest, self.largest_net = outcome.largest, outcome.net.name
        if outcome.status == "ok" and outcome.max_rel >= self.max_rel:
            self.max_rel, self.worst = outcome.max_rel, f"{outcome.net.name}: {outcome.worst}"
        if outcome.status != "ok":
            self.failures.append(outcome)
        if outcome.status == "unstable":
            self.unstable[outcome.layer_type] = self.unstable.get(outcome.layer_type, 0) + 1
        self.generator_notes.extend(f"{outcome.net.name}: {n}" for n in outcome.notes)

    def line(self):
        c = self.counts
        why = ", ".join(f"{t} {k}" for t, k in sorted(self.unstable.items()))
        return (f"nets {self.nets} | caffe-refused {c.get('caffe_refused', 0)} | "
                f"converter-refused {c.get('converter_refused', 0)} | mismatches {c.get('mismatch', 0)} | "
                f"unstable {c.get('unstable', 0)}{f' ({why})' if why else ''} | "
                f"deliberate refusals {c.get('refused_deliberately', 0)} | "
                f"generator shape slips {len(self.generator_notes)} | max rel err (passing nets) {self.max_rel:.2g} | "
                f"largest |caffe| {self.largest:.3g} ({self.largest_net or '-'}) | "
                f"{self.seconds:.1f} s")


def run_many(generator, n, start=0, batch=CHUNK, report=None):
    """Generate and evaluate nets ``start .. start+n-1``; returns a :class:`Tally`."""
    tally = Tally()
    t0 = time.perf_counter()
    for first in range(start, start + n, batch):
        nets = [generator.net(i) for i in range(first, min(first + batch, start + n))]
        for outcome in evaluate(nets):
            tally.add(outcome)
            if report is not None:
                report(outcome)
        tally.seconds = time.perf_counter() - t0
    return tally


def save_failure(outcome, directory):
    """Write a failing net (prototxt, inputs, what failed) for a person to look at."""
    directory = Path(directory) / outcome.net.name
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "net.prototxt").write_text(outcome.net.prototxt())
    np.savez(directory / "inputs.npz", **outcome.net.input_values())
    (directory / "outcome.txt").write_text(
        f"status: {outcome.status}\nlayer: {outcome.layer} ({outcome.layer_type})\n"
        f"detail: {outcome.detail}\nseed: {outcome.net.seed}\n"
    )
    return directory

