"""Where an output cannot go is bad input, found before converting when it can be: a read-only
directory or file system, a full disk, a name the file system refuses, the current directory as
a SavedModel, an input file in the way. Each is exit 2 with one line naming the path, and nothing
is left behind.

Read-only and full file systems are real where the tests may mount a small tmpfs (root with
CAP_SYS_ADMIN), and a directory without write permission where they run as another user (root
ignores permissions); elsewhere those cases skip, and the in-process ones below stand in.
"""

import errno
import os
import subprocess

import pytest
from click.testing import CliRunner
from conftest import GOLDEN

from caffe2keras import export
from caffe2keras.cli import main

NET = GOLDEN / "zoo" / "lenet"  # 1.6 MiB of weights
PROTOTXT, CAFFEMODEL = NET / "deploy.prototxt", NET / "weights.caffemodel"


def convert(output, *extra):
    return CliRunner().invoke(main, [str(PROTOTXT), str(CAFFEMODEL), "-o", str(output), "-q", *extra])


def assert_refused(result, output, says):
    assert result.exit_code == 2, result.output
    assert result.stderr.strip().splitlines() == [f"error: {output}: {says}"], result.stderr


@pytest.fixture
def mount(tmp_path):
    """``mount(options)``: a fresh tmpfs with these mount options, unmounted afterwards."""
    mounted = []

    def make(options, source=None):
        point = tmp_path / f"mnt{len(mounted)}"
        point.mkdir()
        args = ["mount", "-t", "tmpfs", "-o", options, "tmpfs", str(point)]
        if os.geteuid() != 0 or subprocess.run(args, capture_output=True).returncode:
            pytest.skip("cannot mount a tmpfs here (needs root with CAP_SYS_ADMIN)")
        mounted.append(point)
        return point

    yield make
    for point in reversed(mounted):
        subprocess.run(["umount", str(point)], check=True)


def read_only_directory(tmp_path, mount):
    if os.geteuid() != 0:
        directory = tmp_path / "ro"
        directory.mkdir()
        directory.chmod(0o555)
        return directory, "Permission denied"
    return mount("size=1m,ro"), "Read-only file system"


def test_read_only_directory_is_refused_before_converting(tmp_path, mount, monkeypatch):
    directory, reason = read_only_directory(tmp_path, mount)
    from caffe2keras import api

    monkeypatch.setattr(api, "build", lambda *a, **k: pytest.fail("converted before checking the output"))
    for name in ("m.h5", "m.keras", "sm/"):
        assert_refused(convert(f"{directory}/{name}"), f"{directory}/{name}",
                       f"cannot write in the output directory: {reason}")
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("name", ["m.h5", "m.keras", "sm/"])
def test_full_disk_is_refused_before_writing(mount, name):
    directory = mount("size=1m")
    assert_refused(convert(f"{directory}/{name}"), f"{directory}/{name}",
                   "no space left: the weights alone take 1.6 MiB and the file system has 1.0 MiB free")
    assert list(directory.iterdir()) == []


@pytest.mark.parametrize("name", ["m.h5", "m.keras", "sm/"])
def test_disk_filling_up_while_writing_is_one_line(mount, monkeypatch, name):
    """The file system gave no warning (or another writer filled it): HDF5's, Keras' and
    TensorFlow's own write errors become the same one line."""
    directory = mount("size=2m")
    (directory / "filler").write_bytes(b"\0" * (2**20 + 2**19))
    monkeypatch.setattr(export, "_check_space", lambda *args: None)
    assert_refused(convert(f"{directory}/{name}"), f"{directory}/{name}",
                   "cannot write the output: No space left on device")
    assert [p.name for p in directory.iterdir()] == ["filler"]


@pytest.mark.parametrize("error", [
    OSError(errno.ENOSPC, "No space left on device"),
    OSError(errno.EROFS, "Read-only file system"),
    RuntimeError("SaveV2: /out/sm/variables/tempstate123; No space left on device"),  # as TensorFlow says it
], ids=["ENOSPC", "EROFS", "tensorflow"])
def test_write_errors_about_the_disk_are_bad_input(tmp_path, monkeypatch, error):
    def failing(model, path, fmt):
        open(path, "wb").close()
        raise error

    monkeypatch.setattr(export, "_write", failing)
    output = tmp_path / "m.keras"
    result = convert(output)
    assert result.exit_code == 2 and "cannot write the output: " in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_other_write_errors_stay_internal(tmp_path, monkeypatch):
    def failing(model, path, fmt):
        raise OSError(errno.EBADF, "Bad file descriptor")

    monkeypatch.setattr(export, "_write", failing)
    result = convert(tmp_path / "m.keras")
    assert result.exit_code == 1 and "internal error" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_unwritable_directory_found_by_the_probe(tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise OSError(errno.EROFS, "Read-only file system")

    monkeypatch.setattr(export.os, "mkdir", refuse)
    assert_refused(convert(tmp_path / "m.h5"), tmp_path / "m.h5",
                   "cannot write in the output directory: Read-only file system")


def test_longest_file_name_converts_and_a_longer_one_is_refused(tmp_path):
    """The temporary name used to be the output's name plus 10 characters: names of 246 to 255
    bytes failed at the end, as an internal error."""
    longest = tmp_path / ("x" * 252 + ".h5")
    result = convert(longest)
    assert result.exit_code == 0, result.output
    assert [p.name for p in tmp_path.iterdir()] == [longest.name]
    too_long = tmp_path / ("y" * 253 + ".h5")
    assert_refused(convert(too_long), too_long, "the file name is 256 bytes long; this file system allows 255")


@pytest.mark.parametrize("output", ["./", ".", "../"])
def test_current_directory_or_above_is_no_savedmodel(tmp_path, monkeypatch, output):
    """`-o ./ --force` used to try replacing the working directory, leaving an empty ``..old.*``
    directory and an internal error."""
    work = tmp_path / "work"
    work.mkdir()
    (work / "keep").write_text("keep")
    monkeypatch.chdir(work)
    result = convert(output if output.endswith("/") else output + "/", "--force")
    assert result.exit_code == 2
    assert "a SavedModel needs a directory of its own" in result.stderr
    assert sorted(p.name for p in tmp_path.rglob("*")) == ["keep", "work"]


def test_output_replacing_an_input_is_refused(tmp_path):
    model = tmp_path / "lenet"
    model.mkdir()
    for f in (PROTOTXT, CAFFEMODEL):
        (model / f.name).write_bytes(f.read_bytes())
    result = CliRunner().invoke(main, [str(model / "deploy.prototxt"), str(model / "weights.caffemodel"),
                                       "-o", f"{model}/", "--force"])
    assert_refused(result, f"{model}/", f"writing the output would replace the input {model / 'deploy.prototxt'}")
    assert sorted(p.name for p in model.iterdir()) == ["deploy.prototxt", "weights.caffemodel"]
