"""Differential testing against real Caffe: random valid nets (:mod:`.generate`), each run by
Caffe and by the converter and compared tensor by tensor (:mod:`.run`), failures shrunk into
golden fixtures (:mod:`.shrink`). ``python -m tests.differential --n 200 --seed 1``."""
