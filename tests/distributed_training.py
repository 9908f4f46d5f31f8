"""A small decoder of both vocabularies, linen and NNX, trained data parallel (on a 1-D and a 2-D mesh) and
data plus model parallel.

Run as ``python distributed_training.py PROCESS_ID PORT OUT_DIR``, it is one of two processes of four CPU
devices each, joined by `jax.distributed.initialize` on 127.0.0.1 with gloo collectives: it trains every
model on the global 8-device mesh, then saves the data-plus-model-parallel NNX parameters with Orbax from
both processes and restores them; process 0 writes every parameter, gathered, to ``OUT_DIR/trained.npz``.
``tests/test_distributed.py`` starts the two and trains the same models on one device (`train` without a
mesh) to compare.
"""

import contextlib
import os
import sys

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax import nnx
from jax.experimental import multihost_utils
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

import convtranspose as ct

STEPS = 3
BATCH = 8
# name -> (mesh shape, mesh axes, convtranspose.sharding.axis_rules arguments). The second is where XLA's
# partitioner doubled a grouped layer's weight gradient (`convtranspose._grouped`): a 2-D mesh, the batch over
# one axis, the weights replicated.
PARALLELISM = {"data": ((8,), ("data",), dict(data="data", model=None)),
               "data, 2-D mesh": ((4, 2), ("data", "model"), dict(data="data", model=None)),
               "data+model": ((4, 2), ("data", "model"), dict(data="data", model="model"))}


def batch():
  """The global batch and target, the same in every process."""
  rng = np.random.default_rng(0)
  return rng.standard_normal((BATCH, 8, 5, 5), np.float32), rng.standard_normal((BATCH, 8, 20, 20), np.float32)


def linen_decoder():
  class Decoder(nn.Module):
    """MindSpore's legacy layer with two groups, then mint's, depthwise, then mint's with one group."""

    @nn.compact
    def __call__(self, x):
      x = ct.Conv2dTranspose(8, 16, 4, stride=2, pad_mode="pad", padding=1, group=2, has_bias=True,
                             logical_axes=True, name="up")(x)
      x = ct.ConvTranspose2d(16, 16, 3, padding=1, groups=16, logical_axes=True, name="depthwise")(jax.nn.relu(x))
      return ct.ConvTranspose2d(16, 8, 4, stride=2, padding=1, logical_axes=True, name="out")(jax.nn.relu(x))

  return Decoder()


def nnx_decoder(rngs):
  class Decoder(nnx.Module):
    def __init__(self, rngs):
      self.up = ct.nnx.Conv2dTranspose(8, 16, 4, stride=2, pad_mode="pad", padding=1, group=2, has_bias=True,
                                       logical_axes=True, rngs=rngs)
      self.depthwise = ct.nnx.ConvTranspose2d(16, 16, 3, padding=1, groups=16, logical_axes=True, rngs=rngs)
      self.out = ct.nnx.ConvTranspose2d(16, 8, 4, stride=2, padding=1, logical_axes=True, rngs=rngs)

    def __call__(self, x):
      return self.out(jax.nn.relu(self.depthwise(jax.nn.relu(self.up(x)))))

  return Decoder(rngs)


def train(framework: str, parallelism: str | None = None) -> dict:
  """``STEPS`` SGD steps of the ``framework`` ('linen' or 'nnx') decoder on `batch`, the batch over 'data' and
  (with 'data+model') the output channels over 'model' of the global mesh, or on one device without
  ``parallelism``; the parameters afterwards (sharded jax.Arrays, or host arrays on one device)."""
  x, target = batch()
  mesh = rules = None
  if parallelism is not None:
    shape, names, rule_arguments = PARALLELISM[parallelism]
    mesh = jax.make_mesh(shape, names, axis_types=(jax.sharding.AxisType.Explicit,) * len(shape))
    rules = ct.sharding.axis_rules(**rule_arguments)
    rows = NamedSharding(mesh, P("data"))
    share = BATCH // jax.process_count()  # this process's rows of the global batch
    begin = jax.process_index() * share
    x, target = (jax.make_array_from_process_local_data(rows, a[begin:begin + share]) for a in (x, target))

  with jax.set_mesh(mesh) if mesh is not None else contextlib.nullcontext():
    if framework == "linen":
      net = linen_decoder()
      if mesh is None:
        variables = jax.jit(net.init)(jax.random.key(0), x)
      else:
        abstract = jax.eval_shape(net.init, jax.random.key(0), x)
        shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, rules)
        variables = jax.jit(net.init, out_shardings=shardings)(jax.random.key(0), x)
      variables = nn.unbox(variables)

      @jax.jit
      def step(variables, x, target):
        grads = jax.grad(lambda v: jnp.mean((net.apply(v, x) - target) ** 2))(variables)
        return jax.tree.map(lambda p, g: p - 0.1 * g, variables, grads)

      for _ in range(STEPS):
        variables = step(variables, x, target)
      return variables["params"]
    with nn.logical_axis_rules(rules) if rules else nnx.use_eager_sharding(False):  # names only on one device
      model = nnx_decoder(nnx.Rngs(0))
    optimizer = nnx.Optimizer(model, optax.sgd(0.1), wrt=nnx.Param)

    @nnx.jit
    def nnx_step(model, optimizer, x, target):
      optimizer.update(model, nnx.grad(lambda m: jnp.mean((m(x) - target) ** 2))(model))

    for _ in range(STEPS):
      nnx_step(model, optimizer, x, target)
    return nnx.to_pure_dict(nnx.state(model, nnx.Param))


def flat(tree, prefix: str) -> dict:
  """``{prefix/path: host array}`` of a tree of (possibly multi-process) arrays, every shard gathered."""
  leaves = jax.tree_util.tree_leaves_with_path(tree)
  gathered = multihost_utils.process_allgather([leaf for _, leaf in leaves], tiled=True)
  return {prefix + jax.tree_util.keystr(path): np.asarray(value) for (path, _), value in zip(leaves, gathered)}


def main(process_id: int, port: int, out_dir: str) -> None:
  jax.config.update("jax_platforms", "cpu")
  jax.config.update("jax_cpu_collectives_implementation", "gloo")
  jax.config.update("jax_num_cpu_devices", 4)
  jax.config.update("jax_numpy_rank_promotion", "raise")
  jax.distributed.initialize(f"127.0.0.1:{port}", num_processes=2, process_id=process_id,
                             initialization_timeout=120)
  import orbax.checkpoint as ocp  # imported after initialize: it reads the process count

  assert (jax.process_count(), jax.device_count(), jax.local_device_count()) == (2, 8, 4)
  results = {}
  for framework in ("linen", "nnx"):
    for parallelism in PARALLELISM:
      params = train(framework, parallelism)
      results.update(flat(params, f"{framework}:{parallelism}"))
  # Orbax from both processes: each writes its own shards, and the restore puts them back where they were.
  checkpointer = ocp.StandardCheckpointer()
  path = os.path.join(out_dir, "checkpoint")
  checkpointer.save(path, params)
  checkpointer.wait_until_finished()
  target = jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), params)
  restored = checkpointer.restore(path, target)
  assert all(a.sharding == b.sharding for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params)))
  results.update(flat(restored, "restored:nnx:data+model"))
  if process_id == 0:
    np.savez(os.path.join(out_dir, "trained.npz"), **results)
  jax.distributed.shutdown()


if __name__ == "__main__":
  main(int(sys.argv[1]), int(sys.argv[2]), sys.argv[3])
