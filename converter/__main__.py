"""``python -m caffe2keras``: the command line, as the ``caffe2keras`` script runs it."""

from .cli import main

main(prog_name="caffe2keras")
