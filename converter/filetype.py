"""What a file is when it is not what the command asked for, told by its first bytes.

Users hand the converter a saved download page, a Git LFS pointer left by a clone without LFS,
the archive the model came in, another framework's model, the converted model itself or a mean
file. :func:`wrong_file` names these ("is an HTML page, not a caffemodel …") with what to do
instead; the readers (:mod:`~caffe2keras.prototxt`, :mod:`~caffe2keras.caffemodel`) ask it
before parsing. Every signature here is one no prototxt and no caffemodel starts with: a
prototxt starts with a field name or a comment, a caffemodel with the tag of a NetParameter field.
"""

import gzip
import re
import zipfile
from pathlib import Path

# How much of a file the signatures need.
HEAD_BYTES = 4096
LFS_POINTER = b"version https://git-lfs.github.com/spec/"
HTML_START = re.compile(rb"\s*(<!doctype\s+html|<html|<head|<body|<\?xml[^>]*>\s*<(!doctype\s+)?html)", re.IGNORECASE)
SOLVER_FIELDS = re.compile(r"^\s*(base_lr|lr_policy|solver_mode|max_iter|train_net|test_iter)\s*:", re.MULTILINE)
# Magic numbers of binary formats: (signature, offset, what the file is).
MAGIC = (
    (b"\x1f\x8b", 0, "a gzip-compressed file"),
    (b"\xfd7zXZ\x00", 0, "an xz-compressed file"),
    (b"7z\xbc\xaf\x27\x1c", 0, "a 7-Zip archive"),
    (b"Rar!\x1a\x07", 0, "a RAR archive"),
    (b"TFL3", 4, "a TensorFlow Lite model"),
    (b"\x93NUMPY", 0, "a NumPy .npy array"),
    (b"\xff\xd8\xff", 0, "a JPEG image"),
    (b"\x89PNG\r\n\x1a\n", 0, "a PNG image"),
    (b"GIF8", 0, "a GIF image"),
    (b"%PDF", 0, "a PDF document"),
)
ARCHIVES = ("compressed", "archive")
BZIP2 = re.compile(rb"BZh[1-9](1AY&SY|\x17rE8P\x90)")
# Pickle protocols 2-5 open with PROTO n: PyTorch's legacy .pth/.pt format.
PICKLE = re.compile(rb"\x80[\x02-\x05]")
# An ONNX ModelProto opens with ir_version (field 1, varint) then producer_name (field 2).
ONNX = re.compile(rb"\x08[\x01-\x1f]\x12[\x01-\x7f]")


def wrong_file(path, expected, head=None):
    """``"is <what it is>, not a <expected>: <what to do>"`` when ``path`` is a file of a kind
    recognised here, else None. ``expected`` is what the command wanted: ``"prototxt"``,
    ``"caffemodel"``, ... ; ``head`` the file's first bytes, when already read."""
    path = Path(path)
    if head is None:
        try:
            with open(path, "rb") as f:
                head = f.read(HEAD_BYTES)
        except OSError:
            return None
    what = identify(path, bytes(head[:HEAD_BYTES]))
    if what is None:
        return None
    noun, advice = what
    noun, _, why = noun.partition(" (")
    return (f"is {noun}, not a {expected}" + (f" ({why}" if why else "")
            + (f": {advice.format(expected=expected)}" if advice else ""))


def identify(path, head):
    """``(noun, advice)`` for a file of a kind other than prototxt and caffemodel, or None; a
    parenthesis closing the noun says more about it."""
    if head.startswith(LFS_POINTER):
        return "a Git LFS pointer (the real file was never downloaded)", "fetch the real file with git lfs pull"
    if HTML_START.match(head):
        return ("an HTML page (a saved download page?)",
                "download the file itself (on GitHub, the 'raw' or 'Download' link)")
    if head.startswith(b"PK\x03\x04"):
        return _zip(path)
    if head.startswith(b"\x89HDF\r\n\x1a\n"):
        return None  # Caffe writes HDF5 too: the HDF5 reader tells its own from Keras' files
    if _tar_header(head):
        return "a tar archive", "unpack it and give the {expected} it holds"
    if BZIP2.match(head):
        return "a bzip2-compressed file", "unpack it and give the {expected} it holds"
    for signature, offset, noun in MAGIC:
        if head[offset : offset + len(signature)] == signature:
            if noun == "a gzip-compressed file" and _gzipped_tar(path):
                noun = "a gzip-compressed tar archive"
            if any(word in noun for word in ARCHIVES):
                return noun, "unpack it and give the {expected} it holds"
            if noun.startswith("a NumPy"):
                return noun, "a mean image goes to --mean"
            return noun, None
    if PICKLE.match(head):
        return "a Python pickle (a PyTorch .pth/.pt checkpoint?)", None
    if ONNX.match(head):
        return "an ONNX model", None
    return None


def wrong_directory(path, expected, suffixes):
    """What to say of a directory given for a file: a SavedModel is named as such; a directory
    holding one file of the ``suffixes`` points at it."""
    path = Path(path)
    if (path / "saved_model.pb").is_file():
        return f"is a TensorFlow SavedModel directory, not a {expected}"
    try:
        inside = sorted(p for p in path.iterdir() if p.is_file() and p.name.lower().endswith(suffixes))
    except OSError:
        inside = []
    if len(inside) == 1:
        return f"is a directory, not a {expected}: give the file in it, {inside[0]}"
    return f"is a directory, expected a {expected} file"


def is_solver(text):
    """Whether prototxt text is a solver's (base_lr, lr_policy, ...) rather than a network's."""
    return bool(SOLVER_FIELDS.search(text)) and "layer" not in text


def _zip(path):
    try:
        with zipfile.ZipFile(path) as archive:
            names = archive.namelist()
    except (zipfile.BadZipFile, OSError, ValueError):
        return "a damaged zip archive", None
    if "config.json" in names and any(n.endswith(".weights.h5") or n == "metadata.json" for n in names):
        return "a Keras .keras model (a converted model given as input?)", None
    if any(n == "data.pkl" or n.endswith("/data.pkl") for n in names):
        return "a PyTorch checkpoint (.pth/.pt)", None
    shown = ", ".join(names[:5]) + (f", … ({len(names)} files)" if len(names) > 5 else "")
    return f"a zip archive (holding {shown or 'nothing'})", "unpack it and give the {expected} it holds"


def _gzipped_tar(path):
    try:
        with gzip.open(path, "rb") as f:
            block = f.read(512)
    except (OSError, EOFError, gzip.BadGzipFile):
        return False
    return block[257:262] == b"ustar"


def _tar_header(head):
    """Whether ``head`` opens with a tar header: 'ustar' at 257 and the header's checksum right."""
    if len(head) < 512 or head[257:262] != b"ustar":
        return False
    try:
        stored = int(head[148:156].split(b"\0")[0].strip() or b"-1", 8)
    except ValueError:
        return False
    return stored == sum(head[:148]) + 8 * ord(" ") + sum(head[156:512])
