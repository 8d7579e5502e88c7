"""Layer parameters and wiring that are merely bad, or that Caffe refuses: one line, exit 2.

Each net below was run through real Caffe (the oracle) where it has the layer type: Caffe
refuses it too (a CHECK failure, "produced by multiple sources", a crash in Forward), except two
kinds the converter refuses on purpose: PriorBox with a non-positive aspect ratio (Caffe fills
those boxes with inf or NaN) and an input with an empty shape (a 0-D blob, which no Keras model
takes as input). Nets Caffe accepts that the converter once refused or got wrong are golden
fixtures (legacy_shapes: InnerProduct axis 0, PriorBox and BilinearInterpolate on a 2-D bottom).
"""

import pytest
from test_errors import assert_one_error_line, command, refused, small_net

from caffe2keras import api

D2 = 'input: "data"\ninput_shape { dim: 2 dim: 8 }\n'


def layer(text):
    return f"layer {{ {text} }}\n"


BAD = {
    "flatten_end_before_axis": (
        layer('name: "f" type: "Flatten" bottom: "data" top: "f" flatten_param { axis: 3 end_axis: 1 }'),
        None, "Flatten end_axis 1 comes before axis 3"),
    "priorbox_aspect_ratio_zero": (
        layer('name: "pb" type: "PriorBox" bottom: "data" bottom: "data" top: "pb" '
              'prior_box_param { min_size: 2 aspect_ratio: 0 }'),
        None, "PriorBox aspect_ratio must be positive, got [0.0]"),
    "priorbox_aspect_ratio_negative": (
        layer('name: "pb" type: "PriorBox" bottom: "data" bottom: "data" top: "pb" '
              'prior_box_param { min_size: 2 aspect_ratio: -2 flip: false }'),
        None, "PriorBox aspect_ratio must be positive, got [-2.0]"),
    "priorbox_min_size_zero": (
        layer('name: "pb" type: "PriorBox" bottom: "data" bottom: "data" top: "pb" prior_box_param { min_size: 0 }'),
        None, "PriorBox min_size must be positive"),
    "priorbox_max_size_not_above_min": (
        layer('name: "pb" type: "PriorBox" bottom: "data" bottom: "data" top: "pb" '
              'prior_box_param { min_size: 4 max_size: 4 }'),
        None, "PriorBox max_size must be greater than its min_size"),
    "shuffle_channel_group_zero": (
        layer('name: "s" type: "ShuffleChannel" bottom: "data" top: "s" shuffle_channel_param { group: 0 }'),
        None, "ShuffleChannel group must be positive"),
    "yolo_num_box_zero": (
        layer('name: "y" type: "YoloDetectionOutput" bottom: "data" top: "y" '
              'yolo_detection_output_param { num_box: 0 num_classes: 1 }'),
        None, "YoloDetectionOutput num_box must be positive"),
    "embed_input_dim_zero": (
        layer('name: "e" type: "Embed" bottom: "data" top: "e" embed_param { input_dim: 0 num_output: 3 }'),
        D2, "Embed input_dim must be positive"),
    "empty_input_shape": (
        layer('name: "r" type: "ReLU" bottom: "data" top: "r"'),
        'input: "data"\ninput_shape { }\n', "input 'data' has an empty shape"),
    "rank_over_32": (
        layer('name: "r" type: "ReLU" bottom: "data" top: "r"'),
        'input: "data"\ninput_shape { ' + "dim: 1 " * 33 + "}\n", "input 'data' has 33 axes; Caffe allows at most 32"),
    "reshape_to_rank_over_32": (
        layer('name: "r" type: "Reshape" bottom: "data" top: "r" reshape_param { axis: 4 shape { ' + "dim: 1 " * 30 + "} } "),
        None, "top 'r' has 34 axes; Caffe allows at most 32"),
    "top_of_two_layers": (
        layer('name: "r1" type: "ReLU" bottom: "data" top: "x"') + layer('name: "r2" type: "Sigmoid" bottom: "data" top: "x"'),
        None, "layer 'r2': top 'x' already exists"),
    "top_overwriting_an_input": (
        layer('name: "r1" type: "ReLU" bottom: "data" top: "y"') + layer('name: "r2" type: "Sigmoid" bottom: "y" top: "data"'),
        None, "layer 'r2': top 'data' already exists"),
    "top_listed_twice": (
        layer('name: "s" type: "Slice" bottom: "data" top: "a" top: "a" slice_param { axis: 1 slice_point: 1 }'),
        None, "top 'a' already exists"),
    "in_place_at_another_position": (
        layer('name: "r1" type: "ReLU" bottom: "data" top: "y"')
        + layer('name: "s" type: "Slice" bottom: "y" top: "z" top: "y" slice_param { axis: 1 slice_point: 1 }'),
        None, "layer 's': top 'y' already exists"),
    "in_place_on_a_blob_another_layer_reads": (
        layer('name: "r1" type: "ReLU" bottom: "data" top: "y"') + layer('name: "a" type: "Sigmoid" bottom: "y" top: "a"')
        + layer('name: "r3" type: "TanH" bottom: "y" top: "y"'),
        None, "layer 'r3': rewrites 'y' in place while layer 'a' also reads it"),
}
for t in ("Reorg", "Pad", "Upsample", "PixelShuffle", "Interp", "YoloDetectionOutput", "LRN", "ShuffleChannel"):
    params = " pad_param { pad_u: 1 }" if t == "Pad" else ""  # zero pads would copy the blob
    BAD[f"{t}_on_2d"] = (layer(f'name: "l" type: "{t}" bottom: "data" top: "l"{params}'), D2,
                         f"{t} needs a 4-D (num, channels, height, width) bottom, got [2, 8]")
BAD["priorbox_on_5d"] = (
    layer('name: "pb" type: "PriorBox" bottom: "data" top: "pb" prior_box_param { min_size: 2 img_size: 8 }'),
    'input: "data"\ninput_shape { dim: 1 dim: 2 dim: 3 dim: 4 dim: 5 }\n',
    "PriorBox reads its bottom as (num, channels, height, width); it cannot have 5 axes")


def bad_net(tmp_path, name):
    body, header, says = BAD[name]
    path = small_net(tmp_path, body, **({"header": header} if header else {}))
    return dict(args=(path,), says=[says])


@pytest.mark.parametrize("name", sorted(BAD))
def test_refused_in_one_line(tmp_path, name):
    refused(bad_net(tmp_path, name))


@pytest.mark.parametrize("name", ["flatten_end_before_axis", "priorbox_aspect_ratio_zero", "top_of_two_layers",
                                  "Pad_on_2d", "empty_input_shape"])
def test_command_exits_2(tmp_path, name):
    case = bad_net(tmp_path, name)
    result, out = command(tmp_path, *case["args"], "-o", tmp_path / "out" / "model.keras")
    assert case["says"][0] in assert_one_error_line(result)
    assert list(out.iterdir()) == []


def test_in_place_rewrites_of_one_blob_are_legal(tmp_path):
    # In place on the sole reader, again and again (Caffe's in-place chains), and an in-place
    # layer reading the blob at the same position among several bottoms.
    path = small_net(tmp_path, (
        layer('name: "r1" type: "ReLU" bottom: "data" top: "y"')
        + layer('name: "s" type: "Sigmoid" bottom: "y" top: "y"')
        + layer('name: "t" type: "TanH" bottom: "y" top: "y"')
        + layer('name: "e" type: "Eltwise" bottom: "y" bottom: "data" top: "y"')
    ))
    graph, _ = api.check(path)
    assert [graph.blobs[b].name for b in graph.outputs] == ["y"]
    assert [n.name for n in graph.nodes] == ["r1", "s", "t", "e"]
