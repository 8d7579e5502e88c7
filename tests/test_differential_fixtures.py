"""Nets the differential tests (tests/differential) found converted wrongly, shrunk to the
smallest failing net and pinned: each is a golden fixture made by real Caffe
(fixtures/golden/differential/<name>/, README there), checked on every layer top and output."""

import pytest
from conftest import GOLDEN
from helpers import check_golden

ROOT = GOLDEN / "differential"
NETS = sorted(p.name for p in ROOT.iterdir() if (p / "expected.npz").exists()) if ROOT.is_dir() else []


@pytest.mark.parametrize("net", NETS)
def test_differential_fixture(net):
    check_golden(ROOT / net)
