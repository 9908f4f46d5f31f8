"""The benchmark times one layer in every implementation: their outputs agree (no timing is asserted)."""

import importlib.util
import pathlib

import numpy as np
import pytest

from conftest import assert_close

SPEC = importlib.util.spec_from_file_location(
    "bench", pathlib.Path(__file__).resolve().parent.parent / "benchmarks" / "bench.py")
bench = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(bench)

# Small versions of the suite's kinds of layer: (batch, C_in, C_out, spatial, kernel, stride, padding).
SMALL_LAYERS = [(2, 4, 3, (5, 6), 4, 2, 1), (2, 4, 3, (5, 6), 3, 2, 1), (1, 3, 2, (9,), 8, 4, 2),
                (1, 2, 3, (3, 3, 3), 4, 2, 1), (2, 4, 4, (4, 4), 3, 1, 1)]


@pytest.mark.parametrize("layer", SMALL_LAYERS)
def test_every_implementation_computes_the_same_layer(layer):
  runs = bench.runners(layer, "fp32")
  expected = np.asarray(runs["ours NCHW"][0]())
  for name, (forward, _) in runs.items():
    y = np.asarray(forward())
    if name in ("ours NHWC", "flax", "lax"):
      y = np.moveaxis(y, -1, 1)
    assert_close(y, expected)


def test_every_layer_of_the_suite_is_named_and_quick_is_a_subset():
  assert set(bench.QUICK) <= set(bench.LAYERS) and len(bench.LAYERS) >= 10
