"""The programs XLA builds for an H100 and a TPU v6e, compiled here without either (compile-only topologies).

`benchmarks/accelerator_programs.py` does the compiling and the counting; these tests hold its findings for
a representative subset of its suite: on the H100 a forward pass is one cuDNN convolution of the undilated
input, a training step adds one input-gradient convolution and one backward-filter call with the kernel's
own window, nothing multiplies inserted zeros, and an NCHW caller pays one transpose in and one out; grouped
layers are matrix products, with no convolution at all.
No time is measured (XLA cannot autotune without a device); the programs are what a GPU build makes.
"""

import importlib.util
import pathlib
import sys

import jax
import jax.numpy as jnp
import pytest

import convtranspose as ct
from convtranspose import _arguments, _hybrid, functional

# Run in the environment with the `accelerator-tests` extra: `pytest -m accelerators` (the README's test command).
pytestmark = pytest.mark.accelerators

HERE = pathlib.Path(__file__).resolve().parent.parent / "benchmarks"
sys.path.insert(0, str(HERE))
SPEC = importlib.util.spec_from_file_location("accelerator_programs", HERE / "accelerator_programs.py")
programs = importlib.util.module_from_spec(SPEC)
SPEC.loader.exec_module(programs)

# Every rank, output_padding, dilation, stride 1, kernels that tile the stride and not; the grouped layers below.
H100_LAYERS = ["DCGAN 16x256->128 32x32 k4 s2", "StyleGAN-like 4x128->128 32x32 k3 s2", "U-Net 8x128->64 32x32 k2 s2",
               "ResNet stride 1 32x128->128 56x56 k3", "audio 1-D 8x64->32 L1024 k8 s4", "medical 3-D 2x32->16 8^3 k4 s2",
               "output_padding 8x128->64 16x16 k3 s2", "dilated 8x64->64 16x16 k3 s2 d2"]
GROUPED_LAYERS = ["grouped 16x256->256 32x32 k4 s2 g8", "depthwise 8x128->128 32x32 k4 s2"]


def compiled(layer, fn, channels_last, dtype=jnp.float32, chip="h100", train=False, peer=False):
  """The summary of ``fn`` (or with ``train`` its training step) compiled for ``chip``."""
  program = programs.compile_program(fn, layer, dtype, channels_last, chip, train=train, peer=peer)
  return (programs.gpu_program if chip == "h100" else programs.tpu_program)(program, layer, 3 if train else 1)


@pytest.mark.parametrize("dtype", [jnp.float32, jnp.bfloat16], ids=["fp32", "bf16"])
@pytest.mark.parametrize("name", H100_LAYERS)
def test_h100_programs_do_only_the_layers_work(name, dtype):
  layer = programs.SUITE[name]
  n = len(layer.spatial)
  for channels_last, data_format in ((False, programs.CHANNELS_FIRST[n]), (True, programs.CHANNELS_LAST[n])):
    fn = layer.function(data_format, "auto")
    forward = compiled(layer, fn, channels_last, dtype)
    train = compiled(layer, fn, channels_last, dtype, train=True)
    # With a stride, the phases' forward convolutions of the undilated input (one per run of taps; `auto`'s GPU
    # value, timed on an H100); at stride 1, cuDNN's backward-data kernel.
    expected = {"backward-input"} if layer.s == 1 else {"forward"}
    assert forward["convolutions"] and set(forward["convolutions"]) == expected, forward
    # Trained: the reference's value (backward-data), one input gradient (cuDNN's forward kernel), and the weight
    # gradient as cuDNN's backward-filter call.
    kinds = train["convolutions"]
    assert sorted(kinds) == ["backward-filter", "backward-input", "forward"], train
    geometry = _arguments.geometry(n, layer.k, layer.s, "pad", layer.p, layer.d, layer.group, layer.output_padding)
    for program, work in ((forward, geometry.phase_work(layer.spatial)), (train, 1.0)):
      assert not program["zero_stuffed"] and not program["unlowered_convolutions"], program
      # Only the layer's multiply-adds, and in the forward pass the rows the phases cover beyond the input's
      assert program["work"] <= 1.02 * work, (program, work)
      # No convolution whose window spans the image: each is the kernel's (or the phases' smaller) window.
      assert all(max(window) <= layer.k for window in program["windows"]), program
    # An NHWC caller pays nothing for its layout beyond cuDNN's; an NCHW one a transpose in and one out
    # (the training step moves the input and the cotangent in and the two gradients out).
    # (where the kernel leaves holes in the phases, k3 s2, their runs of taps interleave with one more copy).
    assert forward["layout_kernels"] <= (1 if channels_last else 2 + layer.k % layer.s), forward
    assert train["layout_kernels"] <= (2 if channels_last else 4), train


@pytest.mark.parametrize("name", GROUPED_LAYERS)
def test_h100_grouped_layers_are_matrix_products(name):
  """Grouped layers give XLA no convolution (`convtranspose._grouped`: its partitioner gets a grouped
  convolution's weight gradient wrong), so none reaches cuDNN, and nothing multiplies inserted zeros."""
  layer = programs.SUITE[name]
  for channels_last, data_format in ((False, programs.CHANNELS_FIRST[2]), (True, programs.CHANNELS_LAST[2])):
    fn = layer.function(data_format, "auto")
    for program in (compiled(layer, fn, channels_last), compiled(layer, fn, channels_last, train=True)):
      assert not program["convolutions"] and not program["unlowered_convolutions"], program
      assert not program["zero_stuffed"], program


def test_two_stacked_nchw_layers_do_not_transpose_between_them():
  layer = programs.SUITE["DCGAN 8x64->32 32x32 k4 s2"]
  second = ct.Conv2dTranspose(32, 16, 4, 2, "pad", 1, has_bias=False)

  def two(x, w):  # the second layer's weight (32, 16, 4, 4) a slice of the first's (64, 32, 4, 4)
    y = jax.nn.relu(layer.function("NCHW", "auto")(x, w))
    return second.apply({"params": {"weight": w[:32, :16]}}, y)

  alone = compiled(layer, layer.function("NCHW", "auto"), False)
  stacked = compiled(layer, two, False)
  assert stacked["convolutions"] == ["forward"] * 2  # the phases of each
  assert stacked["layout_kernels"] <= alone["layout_kernels"], (alone, stacked)


def test_the_reference_and_flax_waste_work_where_auto_does_not():
  """What the tests above would catch: grouped layers over a zero-stuffed input, a forward pass over it (Flax
  as its users write it), a weight gradient whose window is the whole image (as JAX differentiates the
  lhs-dilated convolution, and Flax with it)."""
  grouped = programs.SUITE["depthwise 8x128->128 32x32 k4 s2"]
  reference = compiled(grouped, grouped.function("NCHW", "dilated"), False, chip="v6e")
  ours = compiled(grouped, grouped.function("NCHW", "auto"), False, chip="v6e")
  assert reference["work"] == pytest.approx(4.0, rel=0.05) and ours["work"] <= 1.1, (reference, ours)
  layer = programs.SUITE["DCGAN 16x256->128 32x32 k4 s2"]
  flax_layer, channels_last = programs.implementations(layer)["flax"]
  flax_train = compiled(layer, flax_layer, channels_last, train=True, peer=True)
  flax_forward = compiled(layer, flax_layer, channels_last, peer=True)
  # Flax's own kernel is not flipped in the graph: a forward convolution of the zero-stuffed input.
  assert flax_forward["convolutions"] == ["forward"] and flax_forward["zero_stuffed"], flax_forward
  assert flax_forward["work"] == pytest.approx(4.0, rel=0.05), flax_forward
  assert "backward-filter" not in flax_train["convolutions"]
  assert max(max(window) for window in flax_train["windows"]) == 32


@pytest.mark.parametrize("chip", ["v6e", "v5e"])
@pytest.mark.parametrize("layer_name", ["U-Net 8x128->64 32x32 k2 s2", "audio 1-D 8x64->32 L1024 k8 s4",
                                        "medical 3-D 2x32->16 8^3 k4 s2", "output_padding 8x128->64 16x16 k3 s2"])
def test_tpu_auto_trains_for_fewer_cycles_than_flax_in_its_own_form(layer_name, chip):
  """`functional._tpu_plan` on a layer of each rank and one with holes in its phases: by XLA:TPU's cost model,
  ours (MindSpore's weight, both layouts) takes at most 0.95x the cycles of Flax's layer as its users write it
  (`peers`) for the training step, on both chips, and where it takes the phases' value (1-D, 2-D without holes)
  no more than Flax's forward pass in NHWC (elsewhere its forward pass is Flax's program)."""
  layer = programs.SUITE[layer_name]
  n = len(layer.spatial)
  flax_layer, _ = programs.implementations(layer)["flax"]
  flax = {train: compiled(layer, flax_layer, True, chip=chip, train=train, peer=True)["cycles"]
          for train in (False, True)}
  for channels_last, data_format in ((True, programs.CHANNELS_LAST[n]), (False, programs.CHANNELS_FIRST[n])):
    ours = layer.function(data_format, "auto")
    train = compiled(layer, ours, channels_last, chip=chip, train=True)["cycles"]
    assert train <= 0.95 * flax[True], (data_format, train, flax)
    if channels_last and layer_name.startswith(("U-Net", "audio")):
      forward = compiled(layer, ours, channels_last, chip=chip)["cycles"]
      assert forward <= flax[False], (forward, flax)


@pytest.mark.parametrize(("kernel", "stride", "dilation", "group", "expected"), [
    # The phases' value (timed on an H100: 0.24-0.57x the lhs-dilated program's forward pass at stride 2);
    # trained, the reference's value and the adjoint's derivatives (cuDNN's backward-data, forward and
    # backward-filter kernels; not timed yet)
    (4, 2, 1, 1, _hybrid.Plan("phase", "dilated", "adjoint")),
    (3, 2, 1, 1, _hybrid.Plan("phase", "dilated", "adjoint")),
    (4, 2, 1, 8, "phase"),  # XLA never gives a grouped lhs-dilated convolution to backward-data
    (4, 2, 1, 64, "phase"),  # depthwise
    (3, 2, 2, 1, "phase"),  # nor a dilated one
    (3, 1, 1, 1, "dilated"),  # stride 1: no lhs dilation, JAX's own gradients are cuDNN's (and faster, timed)
    (3, 1, 1, 4, "dilated"),
])
def test_auto_on_gpu(kernel, stride, dilation, group, expected):
  """The GPU rule of `functional._choose_algorithm`, from the H100 timings and the compiled programs above."""
  geometry = _arguments.geometry(2, kernel, stride, "pad", 0, dilation, group)
  assert functional._choose_algorithm("auto", geometry, 64, 64, jnp.float32, platform="gpu") == expected
  assert functional._choose_algorithm("auto", geometry, 64, 64, jnp.bfloat16, platform="gpu") == expected


PHASES, REFERENCE = _hybrid.Plan("phase", "dilated", "adjoint"), _hybrid.Plan("dilated", "dilated", "adjoint")


@pytest.mark.parametrize(("n", "kernel", "stride", "dilation", "group", "rows", "batch", "expected"), [
    (2, 4, 2, 1, 1, 8192, 8, PHASES),  # the phases' value; trained, the reference's value, the adjoint's derivatives
    (2, 2, 2, 1, 1, 8192, 8, PHASES),  # one tap per phase: a matrix product
    (2, 4, 2, 1, 1, 4096, 16, REFERENCE),  # 16 x 16 positions (VAE 16x64->64): v5e's interleave does not pay
    (2, 3, 2, 1, 1, 8192, 8, REFERENCE),  # phases with their taps at different positions: two products each way
    (2, 4, 2, 1, 1, 4096, 4, REFERENCE),  # 4 examples fill half of the depth-to-space's tiles
    (1, 8, 4, 1, 1, 1024, 4, _hybrid.Plan("phase", "phase", "adjoint")),  # 1-D: the phases trained too
    (2, 4, 2, 1, 1, 512, 8, REFERENCE),  # an output of 2x the kernel's values: moving the kernel does not pay
    (3, 4, 2, 1, 1, 8192, 8, _hybrid.Plan("dilated", "phase", "adjoint")),  # 3-D: the phases only in training
    (2, 4, 2, 1, 8, 8192, 8, "phase"),  # groups: both are matrix products, the reference's over inserted zeros
    (2, 3, 2, 2, 1, 8192, 8, REFERENCE),  # taps 0, 2, 4 all in phase 0: the other phase is empty
    (2, 3, 1, 1, 1, 8192, 8, "dilated"),  # stride 1
])
def test_auto_on_tpu(n, kernel, stride, dilation, group, rows, batch, expected):
  """The TPU rule of `functional._choose_algorithm`, from XLA:TPU's estimated cycles."""
  geometry = _arguments.geometry(n, kernel, stride, "pad", 0, dilation, group)
  spatial = (round((rows // batch) ** (1 / n)),) * n
  assert functional._choose_algorithm("auto", geometry, 64, 64, jnp.float32, "tpu", batch, spatial) == expected
