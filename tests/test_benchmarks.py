"""The benchmark times one layer in every implementation: their outputs agree (no timing is asserted)."""

import json
import pathlib
import re
import statistics
import sys

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import torch

import convtranspose as ct
from conftest import assert_close

ROOT = pathlib.Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "benchmarks"))  # as `python benchmarks/bench.py` finds its neighbours

import bench  # noqa: E402
import peers  # noqa: E402

# Small versions of the suite's kinds of layer: (batch, C_in, C_out, spatial, kernel, stride, padding).
SMALL_LAYERS = [(2, 4, 3, (5, 6), 4, 2, 1), (2, 4, 3, (5, 6), 3, 2, 1), (1, 3, 2, (9,), 8, 4, 2),
                (1, 2, 3, (3, 3, 3), 4, 2, 1), (2, 4, 4, (4, 4), 3, 1, 1),
                # output layers (few output channels: the phases' col2im product on CPU)
                (2, 16, 1, (5, 6), 4, 2, 1), (2, 16, 3, (5, 6), 5, 2, 2), (1, 8, 1, (9,), 8, 4, 2),
                (1, 16, 1, (3, 3, 3), 4, 2, 1), (2, 16, 1, (5, 5), 3, 1, 1)]


@pytest.mark.parametrize("layer", SMALL_LAYERS)
def test_every_implementation_computes_the_same_layer(layer):
  # In float32, not the TF32 that JAX and PyTorch default to on a GPU (no effect on CPU).
  with jax.default_matmul_precision("highest"), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
    runs = bench.runners(layer, "fp32")
    outputs = {name: forward() for name, (forward, _) in runs.items()}
  expected = np.asarray(outputs["ours NCHW"])
  for name, y in outputs.items():
    y = y.cpu().numpy() if isinstance(y, torch.Tensor) else np.asarray(y)  # PyTorch's may be on the GPU
    if name in ("ours NHWC", "flax", "lax"):
      y = np.moveaxis(y, -1, 1)
    assert_close(y, expected)


@pytest.mark.parametrize("layer", SMALL_LAYERS)
def test_every_training_step_computes_the_same_loss_and_gradients(layer):
  """Each peer's training step in its own form (Flax's and lax's kernel, PyTorch's ``backward()``) is the same
  step as ours: the same loss of the same output, the same input gradient, and the gradient of each one's own
  weight, which `convtranspose.convert.from_flax_kernel` maps onto the MindSpore weight's."""
  with jax.default_matmul_precision("highest"), torch.backends.cudnn.flags(enabled=True, allow_tf32=False):
    steps = {name: train() for name, (_, train) in bench.runners(layer, "fp32").items()}
  expected_loss, (expected_dx, expected_dw) = steps["ours NCHW"]
  for name, step in steps.items():
    if name.startswith("torch"):
      loss, dx, dw = (t.detach().cpu().numpy() for t in step)
    else:
      loss, (dx, dw) = step
    if name in ("ours NHWC", "flax", "lax"):
      dx = np.moveaxis(np.asarray(dx), -1, 1)
    if name in ("flax", "lax"):
      dw = ct.convert.from_flax_kernel(dw)
    assert_close(np.asarray(loss), np.asarray(expected_loss))
    assert_close(np.asarray(dx), np.asarray(expected_dx))
    assert_close(np.asarray(dw), np.asarray(expected_dw))


@pytest.mark.parametrize(("k", "s", "p", "d", "output_padding", "expected"), [
    (4, 2, 1, 1, 0, "SAME"),  # DCGAN: 2L rows
    (2, 2, 0, 1, 0, "SAME"),  # U-Net
    (3, 2, 1, 1, 1, "SAME"),  # output_padding makes 2L
    (3, 2, 1, 1, 0, (1, 1)),  # 2L - 1 rows: Flax's 'SAME' cannot say it
    (3, 2, 2, 2, 1, "SAME"),  # dilation 2: dk = 5, 2L rows
    (3, 1, 1, 1, 0, "SAME"),
    (5, 2, 2, 1, 0, (2, 2)),
])
def test_the_peers_padding_is_what_a_flax_user_writes(k, s, p, d, output_padding, expected):
  assert peers.flax_padding(k, s, p, d, output_padding) == expected


@pytest.mark.parametrize("layer", SMALL_LAYERS)
def test_the_floor_has_the_layers_multiply_adds(layer):
  """`XLA matmul floor`: (N * prod(L), C_in) @ (C_in, prod(k) * C_out), and in training its two gradient products
  (shapes of the rows and the columns): batch * prod(L) * C_in * prod(k) * C_out multiply-adds each."""
  batch, c_in, c_out, spatial, k, _, _ = layer
  forward, train = bench.floor_runner(layer, "fp32")
  rows, taps = batch * int(np.prod(spatial)), k ** len(spatial)
  assert forward().shape == (rows, taps * c_out)
  assert [g.shape for g in train()] == [(rows, taps * c_out), (rows, c_in), (c_in, taps * c_out)]


def test_every_layer_of_the_suite_is_named_and_quick_is_a_subset():
  assert set(bench.QUICK) <= set(bench.LAYERS) and len(bench.LAYERS) >= 10


@pytest.mark.parametrize("layer", [layer for layer in SMALL_LAYERS if len(layer[3]) >= 2 and layer[5] > 1])
def test_the_cpu_training_step_stays_on_matrix_products(layer):
  """The relapse the benchmark measures, caught without timing: XLA's CPU weight gradient of a convolution is
  1.5-4x slower than that of a matrix product (`convtranspose._phase.valid_convolution`), so a strided
  2-D or 3-D training step on CPU must compile to dots and no convolution."""
  if jax.default_backend() != "cpu":
    pytest.skip("the matrix-product formulation is the CPU choice; other backends keep XLA's convolution")
  batch, c_in, c_out, spatial, k, s, p = layer
  x, weight = jnp.ones((batch, c_in, *spatial)), jnp.ones((c_in, c_out, *(k,) * len(spatial)))
  step = jax.jit(jax.grad(lambda x, w: jnp.sum(ct.conv_transpose(x, w, None, s, "pad", p) ** 2), argnums=(0, 1)))
  hlo = step.lower(x, weight).compile().as_text()
  assert " convolution(" not in hlo and " dot(" in hlo


def test_split_phase_products_keep_the_layers_product_form():
  """Where the phases' tap runs split the product (k3 s2), a wide layer on a small input keeps im2col: each
  part's fewer columns once flipped it to the channels-first col2im form, which multiplies the kernel per
  example (32x512->256 4x4: 163 MiB of temporaries per training step and 10x the time; 40 MiB in im2col)."""
  if jax.default_backend() != "cpu":
    pytest.skip("the product forms are the CPU's")
  x, weight = jnp.ones((32, 512, 4, 4)), jnp.ones((512, 256, 3, 3))
  layer = jax.value_and_grad(lambda x, w: jnp.mean(ct.conv_transpose(x, w, None, 2, "pad", 1, algorithm="phase") ** 2),
                             argnums=(0, 1))
  assert jax.jit(layer).lower(x, weight).compile().memory_analysis().temp_size_in_bytes < 64 * 2**20


def test_readme_quotes_the_results_file():
  """The README's speed sentence is the saved measurement: the training step's geometric mean over Flax and lax,
  the layer count, and DCGAN's times."""
  readme = (ROOT / "README.md").read_text()
  rows = [row for row in _results("fp32") if row["pass_"] == "train"]
  for peer in ("flax", "lax"):
    ratio = statistics.geometric_mean(row["ms"]["ours NCHW"] / row["ms"][peer] for row in rows)
    assert f"takes {ratio:.2f}x the time of" in readme
  assert f"(geometric mean over {len(rows)} layers;" in readme
  dcgan = next(row["ms"] for row in rows if row["layer"] == "DCGAN 32x256->128 8x8 k4 s2")
  expected = (f"{dcgan['ours NCHW']:.0f} ms against Flax's {dcgan['flax']:.0f} ms; PyTorch "
              f"{dcgan['torch CL']:.0f} ms")
  assert expected in re.sub(r"\s+", " ", readme), expected


DASH = "\N{EN DASH}"  # the page's ranges


def _results(dtype: str) -> list[dict]:
  """The rows of ``benchmarks/results/cpu-{dtype}.json``, bench.py's saved measurement."""
  return json.loads((ROOT / "benchmarks" / "results" / f"cpu-{dtype}.json").read_text())["rows"]


def _low(value: float) -> str:
  return f"{value:.4f}" if value < 0.01 else f"{value:.2f}"


def test_the_speed_page_quotes_the_results_files():
  """Every cell of the speed page's two CPU tables, and its worst layer's times, are the results files' (the
  page once said 1.65x where `cpu-fp32.json` says 1.28x, and 79 ms for 111)."""
  page = re.sub(r"\s+", " ", (ROOT / "docs" / "speed.md").read_text())
  results = {dtype: _results(dtype) for dtype in ("fp32", "bf16")}
  for dtype, rows in results.items():
    cells = {}
    for pass_ in ("forward", "train"):
      chosen = [row for row in rows if row["pass_"] == pass_]
      floor = [row["ratio_to_best_peer"]["XLA matmul floor"] for row in chosen]
      above = f"{'above 1 on ' if (dtype, pass_) == ('fp32', 'forward') else ''}{sum(r > 1 for r in floor)}"
      cells[pass_, "floor"] = (f"{statistics.geometric_mean(floor):.2f}x ({min(floor):.2f}{DASH}{max(floor):.2f}; "
                               f"{above} of {len(floor)})")
      nchw, nhwc = (statistics.geometric_mean(row["ratio_to_best_peer"][f"ours {layout}"] for row in chosen)
                    for layout in ("NCHW", "NHWC"))
      cells[pass_, "ours"] = f"{nchw:.2f}x (NHWC {nhwc:.2f}x)"
      if dtype == "fp32":
        for peer in ("flax", "lax", "ours dilated", "torch", "torch CL"):
          ratios = [(row["ms"]["ours NCHW"] / row["ms"][peer], row["layer"].replace("->", "\N{RIGHTWARDS ARROW}")) for row in chosen]
          worst = max(ratios)
          cell = (f"{statistics.geometric_mean(r for r, _ in ratios):.2f}x ({_low(min(ratios)[0])}{DASH}{worst[0]:.2f}; "
                  f"{worst[1]})")
          assert cell in page, (peer, pass_, cell)
    for kind in ("floor", "ours"):
      row = f"| {dtype}: {'XLA matmul floor' if kind == 'floor' else 'ours (NCHW)'} / best peer | "
      expected = f"{row}{cells['forward', kind]} | {cells['train', kind]} |"
      assert expected in page, expected
  worst = next(row["ms"] for row in results["fp32"]
               if row["pass_"] == "train" and row["layer"] == "output 4x32->3 128x128 k7 s1")
  expected = (f"(training step {worst['ours NCHW']:.0f} ms, Flax {worst['flax']:.0f}, PyTorch channels-last "
              f"{worst['torch CL']:.0f})")
  assert expected in page, expected
  assert f"the XLA matmul floor alone ({worst['XLA matmul floor']:.0f} ms)" in page
  ratios = {(pass_, peer): [row["ms"]["ours NCHW"] / row["ms"][peer] for row in results["bf16"]
                            if row["pass_"] == pass_]
            for pass_ in ("forward", "train") for peer in ("flax", "lax", "torch CL")}
  mean = {key: statistics.geometric_mean(values) for key, values in ratios.items()}
  for expected in (f"forward {mean['forward', 'flax']:.2f}x Flax's and {mean['forward', 'lax']:.2f}x lax's time "
                   f"({_low(min(ratios['forward', 'lax']))}{DASH}{max(ratios['forward', 'lax']):.2f},",
                   f"training step {mean['train', 'flax']:.2f}x (at most {max(ratios['train', 'lax']):.2f}x,",
                   f"channels-last {mean['forward', 'torch CL']:.2f}x forward and {mean['train', 'torch CL']:.2f}x "
                   f"training step"):
    assert expected in page, expected


def test_the_speed_pages_accelerator_tables_are_the_results_files_rows():
  """Every row of the speed page's compile-only tables (XLA:TPU cycles, H100 kernels) is a row of
  `benchmarks/results/accelerator-programs.md`, which `benchmarks/accelerator_programs.py` writes with its JSON."""
  results = (ROOT / "benchmarks" / "results" / "accelerator-programs.md").read_text().splitlines()
  rows = [line for line in (ROOT / "docs" / "speed.md").read_text().splitlines()
          if line.startswith("| ") and (re.search(r"\d+k( vs|\s*\|)", line) or " kernels" in line)]
  assert len(rows) >= 30  # v6e and v5e: the fifteen layers Flax can express
  assert [row for row in rows if row not in results] == []
