"""``caffe2keras batch``: many models from a folder or a manifest, one failure not stopping the
others, a summary table, a JSON report and a non-zero exit when any failed."""

import json
import shutil

import keras
import numpy as np
import pytest
from click.testing import CliRunner
from conftest import GOLDEN
from helpers import assert_close

from caffe2keras import preprocess
from caffe2keras.cli import main

ZOO = GOLDEN / "zoo"


def run(*args):
    return CliRunner().invoke(main, ["batch", *[str(a) for a in args]])


def copy_nets(root, *names):
    for name in names:
        shutil.copytree(ZOO / name, root / name)
    return root


def check_against_caffe(path, net):
    model = keras.models.load_model(path, safe_mode=True, compile=False)
    expected = np.load(ZOO / net / "expected.npz")
    x = expected["input/data"].transpose(0, 2, 3, 1)
    (out_key,) = [k for k in expected.files if k.startswith("layer/")]
    assert_close(np.asarray(model(x, training=False)), expected[out_key], f"{net} {path.suffix}")


def test_folder_of_model_folders_converts_each_and_reports_failures(tmp_path):
    models = copy_nets(tmp_path / "models", "lenet", "cifar10_quick")
    broken = models / "broken"  # lenet's prototxt with cifar10's weights
    broken.mkdir()
    shutil.copy(ZOO / "lenet" / "deploy.prototxt", broken)
    shutil.copy(ZOO / "cifar10_quick" / "weights.caffemodel", broken)
    ambiguous = models / "ambiguous"
    ambiguous.mkdir()
    shutil.copy(ZOO / "lenet" / "deploy.prototxt", ambiguous)
    for name in ("a.caffemodel", "b.caffemodel"):
        shutil.copy(ZOO / "lenet" / "weights.caffemodel", ambiguous / name)
    out, report = tmp_path / "out", tmp_path / "report.json"

    result = run(models, "-o", out, "--report", report)
    assert result.exit_code == 1, result.output
    records = {r["name"]: r for r in json.loads(report.read_text())["models"]}
    assert sorted(records) == ["ambiguous", "broken", "cifar10_quick", "lenet"]
    assert records["lenet"]["status"] == records["cifar10_quick"]["status"] == "ok"
    assert records["broken"]["status"] == "failed" and "layer 'conv1'" in records["broken"]["error"]
    assert "expected one caffemodel, found 2" in records["ambiguous"]["error"]
    assert "2 of 4 converted, 2 failed" in result.stdout
    table = result.stdout.splitlines()
    assert table[0].split()[:2] == ["model", "status"]
    assert any(line.startswith("broken ") and "failed" in line for line in table)
    for net in ("lenet", "cifar10_quick"):
        check_against_caffe(out / f"{net}.keras", net)


def test_toml_manifest_with_options_and_formats(tmp_path):
    copy_nets(tmp_path, "lenet", "cifar10_quick")
    shutil.copy(GOLDEN / "mean" / "mean.npy", tmp_path / "mean.npy")
    manifest = tmp_path / "models.toml"
    manifest.write_text(
        '[[models]]\nname = "lenet_h5"\nprototxt = "lenet/deploy.prototxt"\n'
        'caffemodel = "lenet/weights.caffemodel"\nformat = "h5"\n\n'
        '[[models]]\nname = "cifar"\nprototxt = "cifar10_quick/deploy.prototxt"\n'
        'caffemodel = "cifar10_quick/weights.caffemodel"\ninput_shape = "1,3,32,32"\n'
        'mean = "mean.npy"\nrgb_input = true\noutputs = "ip1"\n'
    )
    out = tmp_path / "out"
    result = run(manifest, "-o", out, "--quiet")
    assert result.exit_code == 0, result.output
    assert result.stdout == ""
    check_against_caffe(out / "lenet_h5.h5", "lenet")
    cifar = keras.models.load_model(out / "cifar.keras", safe_mode=True, compile=False)
    assert cifar.output_names == ["ip1"]
    config = preprocess.find(cifar)
    assert config["rgb_input"] and tuple(config["mean_shape"]) == (32, 32, 3)


def test_yaml_manifest_and_one_bad_entry(tmp_path):
    pytest.importorskip("yaml")
    copy_nets(tmp_path, "lenet")
    manifest = tmp_path / "models.yaml"
    manifest.write_text(
        "models:\n"
        "  - {name: good, prototxt: lenet/deploy.prototxt, caffemodel: lenet/weights.caffemodel}\n"
        "  - {name: typo, prototxt: lenet/deploy.prototxt, caffemodel: lenet/weights.caffemodel, meen: 1}\n"
        "  - {name: missing, prototxt: nowhere/deploy.prototxt}\n"
    )
    report = tmp_path / "r.json"
    result = run(manifest, "-o", tmp_path / "out", "--report", report)
    assert result.exit_code == 1
    records = {r["name"]: r for r in json.loads(report.read_text())["models"]}
    assert records["good"]["status"] == "ok"
    assert "unknown option(s): meen" in records["typo"]["error"]
    assert "no such file" in records["missing"]["error"]


def test_a_folder_that_is_one_model(tmp_path):
    folder = copy_nets(tmp_path, "lenet") / "lenet"
    result = run(folder, "-o", tmp_path / "out")
    assert result.exit_code == 0, result.output
    assert (tmp_path / "out" / "lenet.keras").is_file()


def test_nothing_to_convert_is_bad_input(tmp_path):
    result = run(tmp_path, "-o", tmp_path / "out")
    assert result.exit_code == 2
    assert "holds no model folder" in result.output


@pytest.mark.slow
def test_the_golden_zoo_converts_whole(tmp_path):
    report = tmp_path / "report.json"
    result = run(ZOO, "-o", tmp_path / "out", "--report", report, "--quiet")
    assert result.exit_code == 0, result.output
    records = json.loads(report.read_text())["models"]
    assert len(records) == len([p for p in ZOO.iterdir() if p.is_dir()])
    assert all(r["status"] == "ok" for r in records)
