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
from caffe2keras.cli import EXIT_BATCH_FAILED, main

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
    assert result.exit_code == EXIT_BATCH_FAILED, result.output
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
    assert result.exit_code == EXIT_BATCH_FAILED
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


def manifest_naming(tmp_path, name, fmt="keras"):
    copy_nets(tmp_path, "lenet")
    manifest = tmp_path / "models.toml"
    manifest.write_text(f'[[models]]\nname = "{name}"\nprototxt = "lenet/deploy.prototxt"\n'
                        f'caffemodel = "lenet/weights.caffemodel"\nformat = "{fmt}"\n')
    return manifest


@pytest.mark.parametrize("name, fmt", [
    ("../../victimdir", "savedmodel"),
    ("../escaped", "keras"),
    ("/tmp/absolute", "h5"),
    ("sub/model", "keras"),
    ("..", "savedmodel"),
    ("model", "keras/../../escaped"),
])
def test_manifest_names_cannot_leave_the_output_folder(tmp_path, name, fmt):
    """A manifest entry's name or format leading outside -o is refused and reported; with
    --force it used to delete a directory outside -o and put the model there."""
    root = tmp_path / "a" / "b"
    root.mkdir(parents=True)
    victim = tmp_path / "victimdir"
    victim.mkdir()
    (victim / "precious").write_text("precious")
    out, report = root / "out", root / "report.json"
    manifest = manifest_naming(root, name, fmt)
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = run(manifest, "-o", out, "--report", report, "--force")
    assert result.exit_code == EXIT_BATCH_FAILED, result.output
    (record,) = json.loads(report.read_text())["models"]
    assert record["status"] == "failed" and not record["internal"]
    assert "outputs stay inside the output folder" in record["error"] or "unknown format" in record["error"]
    assert (victim / "precious").read_text() == "precious"
    assert list(out.iterdir()) == []
    after = sorted(str(p) for p in tmp_path.rglob("*"))
    assert set(after) - set(before) == {str(out), str(report)}


@pytest.mark.parametrize("fmt", ["keras", "savedmodel"])
def test_a_symbolic_link_in_the_output_folder_leading_out_is_refused(tmp_path, fmt):
    victim = tmp_path / "victim"
    victim.mkdir()
    (victim / "precious").write_text("precious")
    out = tmp_path / "out"
    out.mkdir()
    (out / ("model" if fmt == "savedmodel" else "model.keras")).symlink_to(victim if fmt == "savedmodel" else victim / "precious")
    report = tmp_path / "report.json"
    result = run(manifest_naming(tmp_path, "model", fmt), "-o", out, "--report", report, "--force")
    assert result.exit_code == EXIT_BATCH_FAILED, result.output
    (record,) = json.loads(report.read_text())["models"]
    assert "a symbolic link leading outside the output folder" in record["error"]
    assert sorted(p.name for p in victim.iterdir()) == ["precious"]
    assert (victim / "precious").read_text() == "precious"


def test_an_existing_report_is_kept_without_force(tmp_path):
    report = tmp_path / "report.json"
    report.write_text("precious")
    out, manifest = tmp_path / "out", manifest_naming(tmp_path, "lenet")
    result = run(manifest, "-o", out, "--report", report)
    assert result.exit_code == 2
    assert result.stderr.strip().splitlines() == [f"error: {report}: the output file exists; pass --force to overwrite it"]
    assert report.read_text() == "precious" and not out.exists()
    result = run(manifest, "-o", out, "--report", report, "--force")
    assert result.exit_code == 0, result.output
    assert json.loads(report.read_text())["models"][0]["status"] == "ok"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["lenet", "models.toml", "out", "report.json"]


def test_max_params_from_the_manifest_or_the_command(tmp_path):
    copy_nets(tmp_path, "lenet")
    manifest = tmp_path / "models.toml"
    entry = 'prototxt = "lenet/deploy.prototxt"\ncaffemodel = "lenet/weights.caffemodel"\n'
    manifest.write_text(f'[[models]]\nname = "low"\n{entry}max_params = 1000\n\n'
                        f'[[models]]\nname = "default"\n{entry}\n'
                        f'[[models]]\nname = "bad"\n{entry}max_params = "many"\n')
    report = tmp_path / "r.json"
    run(manifest, "-o", tmp_path / "out", "--report", report)
    records = {r["name"]: r for r in json.loads(report.read_text())["models"]}
    assert "more than the 1,000 allowed" in records["low"]["error"]
    assert records["default"]["status"] == "ok"
    assert "max_params must be a positive whole number, not 'many'" in records["bad"]["error"]
    run(manifest, "-o", tmp_path / "out2", "--report", report, "--force", "--max-params", "2000")
    records = {r["name"]: r for r in json.loads(report.read_text())["models"]}
    assert "more than the 1,000 allowed" in records["low"]["error"]  # the entry's own limit wins
    assert "more than the 2,000 allowed" in records["default"]["error"]
