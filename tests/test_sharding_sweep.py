"""The sharding guard's sweep (`convtranspose._grouped`): every algorithm, in its CPU, GPU and TPU
formulations, at every rank, gives one device's value and gradients on every mesh a user can build, and a
batch-sharded grouped layer computes only its own examples.

Each case is one placement of the operands on an 8-device mesh (1-D, 2-D both ways round, 3-D): the batch
over every subset of the mesh's axes (none included), the weight replicated or its output channels over the
mesh's last axis (for a depthwise layer, whose weight has one output channel per group, its groups). Over the
cases rotate the rank, the groups (one, two, four, depthwise), the padding modes, the layouts, the axis types
(`Explicit`, `Auto`) and the dtypes (float32, bfloat16); every case computes, in one program, the loss
``sum(sin(y))`` and its gradients with respect to input, weight and bias for ``'dilated'``, ``'phase'`` and
``'hybrid'`` as XLA would be given them for each platform, and ``'auto'`` on the CPU, against one device's
reference (``'dilated'`` on the CPU, unsharded).
"""

import contextlib
import itertools
import re

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import convtranspose as ct
from conftest import assert_close, put_on, standard_normal
from convtranspose import functional

# auto is one of the three on each platform (tests/test_functional.py pins which); it is run as users call
# it, on the platform this program is compiled for.
FORMULATIONS = (*itertools.product(("cpu", "gpu", "tpu"), ("dilated", "phase", "hybrid")), ("cpu", "auto"))
REFERENCE = ("cpu", "dilated")
MESHES = {"8": ((8,), ("data",)), "4x2": ((4, 2), ("data", "model")), "2x4": ((2, 4), ("data", "model")),
          "2x2x2": ((2, 2, 2), ("data", "model", "pipe"))}
# (group, C_in, C_out): two groups, depthwise, four groups, one group.
GROUPS = ((2, 8, 16), (8, 8, 8), (4, 8, 32), (1, 4, 16))
PADDING_MODES = ("zeros", "reflect", "circular", "replicate")


def _placements():
  """(mesh, the batch's mesh axes, the weight's mesh axis or None)."""
  for mesh, (_, names) in MESHES.items():
    for size in range(len(names) + 1):
      for batch in itertools.combinations(names, size):
        for weight in (None, names[-1]):
          if batch or weight:
            yield mesh, batch, weight


PLACEMENTS = list(_placements())


def _case(index: int):
  """The layer of case ``index``: rank and groups cycle together (every pair in 12 cases), the rest apart."""
  n = index % 3 + 1
  group, c_in, c_out = GROUPS[(index // 3) % len(GROUPS)]
  channels_last = index % 2 == 1
  arguments = dict(stride=2, pad_mode="pad", padding=1, group=group, padding_mode=PADDING_MODES[index % 4],
                   data_format={1: "NLC", 2: "NHWC", 3: "NDHWC"}[n] if channels_last else None)
  spatial = {1: (6,), 2: (5, 4), 3: (3, 4, 3)}[n]
  x_shape = (8, *spatial, c_in) if channels_last else (8, c_in, *spatial)
  kernel = {1: (4,), 2: (3, 4), 3: (3, 2, 3)}[n]
  axis_type = (AxisType.Explicit, AxisType.Auto)[(index // 2) % 2]
  dtype = jnp.bfloat16 if index % 5 == 4 else jnp.float32
  return arguments, x_shape, (c_in, c_out // group, *kernel), c_out, axis_type, dtype


@contextlib.contextmanager
def _formulation(platform: str):
  """Traces the layer as XLA would be given it for ``platform`` (as tests/test_accelerator_formulations.py)."""
  original = functional._by_platform
  functional._by_platform = lambda x, w, compute: compute(x, w, platform=platform)
  try:
    yield
  finally:
    functional._by_platform = original


def _value_and_grads(arguments, formulations, cotangent):
  """The output ``y`` and the gradients of ``sum(y * cotangent)`` with respect to input, weight and bias, per
  formulation, in one jit."""
  def loss(x, weight, bias, platform, algorithm):
    with _formulation(platform):
      y = ct.conv_transpose(x, weight, bias, algorithm=algorithm, **arguments)
    return jnp.sum(y.astype(jnp.float32) * cotangent), y

  def all_of(x, weight, bias):
    return {key: jax.grad(loss, argnums=(0, 1, 2), has_aux=True)(x, weight, bias, *key) for key in formulations}
  return jax.jit(all_of)


def _weight_spec(weight_shape, axis, mesh):
  """The weight's output channels over ``axis``: axis 1 (``C_out // group``), or for a depthwise layer's
  single output channel per group, axis 0 (its groups)."""
  if axis is None:
    return P()
  return P(None, axis) if weight_shape[1] % mesh.shape[axis] == 0 else P(axis)


# Every mesh and every way to shard the batch in the test tier, the weight's output channels sharded too in the
# exhaustive one (`pytest -m exhaustive`).
@pytest.mark.parametrize("index", [i if PLACEMENTS[i][2] is None else pytest.param(i, marks=pytest.mark.exhaustive)
                                   for i in range(len(PLACEMENTS))],
                         ids=[f"{m}-batch:{'+'.join(b) or 'none'}-weight:{w}" for m, b, w in PLACEMENTS])
def test_sharded_equals_one_device(index):
  mesh_name, batch_axes, weight_axis = PLACEMENTS[index]
  arguments, x_shape, weight_shape, c_out, axis_type, dtype = _case(index)
  x, weight, bias = (standard_normal(index + i, s) for i, s in enumerate((x_shape, weight_shape, (c_out,))))
  y_shape = jax.eval_shape(lambda x, w: ct.conv_transpose(x, w, **arguments), x, weight).shape
  cotangent = standard_normal(index + 3, y_shape)
  if dtype == jnp.bfloat16:  # positive terms: sums over the batch, split over devices, cancel nothing
    x, cotangent = jnp.abs(x), jnp.abs(cotangent)
  x, weight, bias = (a.astype(dtype) for a in (x, weight, bias))
  expected = _value_and_grads(arguments, [REFERENCE], cotangent)(x, weight, bias)[REFERENCE]
  shape, names = MESHES[mesh_name]
  mesh = jax.make_mesh(shape, names, axis_types=(axis_type,) * len(names))
  with jax.set_mesh(mesh):
    specs = (P(batch_axes or None), _weight_spec(weight_shape, weight_axis, mesh), P())
    operands = put_on(mesh, (x, weight, bias), specs)
    actual = _value_and_grads(arguments, FORMULATIONS, cotangent)(*operands)
  wrong = []
  for key, (grads, y) in actual.items():
    for name, a, b in zip(("y", "x", "weight", "bias"), (y, *grads), (expected[1], *expected[0])):
      try:
        assert_close(a, b, dtype)
      except AssertionError:
        wrong.append((key, name, float(np.median(np.asarray(a, np.float32) / np.asarray(b, np.float32)))))
  assert not wrong, f"(formulation, gradient, median ratio to one device): {wrong}"


@pytest.mark.parametrize("group", [2, 8])
def test_a_batch_sharded_grouped_layer_gathers_no_batch(group):
  """XLA's grouped convolution all-gathers the batch under a batch-sharded input and computes every example
  on every device (openxla/xla#47945); the layer's training step, in every formulation, gathers nothing:
  its only collective is the all-reduce of the weight and bias gradients."""
  arguments = dict(stride=2, pad_mode="pad", padding=1, group=group)
  x, weight, bias = standard_normal(0, (8, 8, 6, 6)), standard_normal(1, (8, 16 // group, 4, 4)), jnp.zeros(16)
  mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Auto,) * 2)
  with jax.set_mesh(mesh):
    operands = put_on(mesh, (x, weight, bias), (P("data"), P(), P()))
    program = _value_and_grads(arguments, FORMULATIONS, standard_normal(2, (8, 16, 12, 12)))
    program = program.lower(*operands).compile().as_text()
  collectives = re.findall(r"\b(all-gather|all-reduce|all-to-all|collective-permute|reduce-scatter)(?:-start)?\(",
                           program)
  assert collectives and set(collectives) == {"all-reduce"}, sorted(set(collectives))
