"""The layer under a mesh with `Explicit` axes ("sharding in types"), where each operation's output sharding
is part of its type.

JAX asks the transposed convolution's inner operations (the zero-stuffed convolution's derivatives, the phase
formulations' depth-to-space reshapes) for output shardings that only the whole layer can name. So the layer
is one `jax.sharding.auto_axes` block: inside it XLA's partitioner propagates the operands' shardings as
on an `Auto` mesh; its output gets the sharding its type says (`output_spec`), or the caller's
``out_sharding``. Outside an explicit mesh nothing changes (an ``out_sharding`` there is a sharding
constraint), and under `jax.shard_map` the manual axes are left to the caller: the layer computes the local
block.
"""

import math
from collections.abc import Callable

import jax
import numpy as np
from jax import lax
from jax.sharding import NamedSharding
from jax.sharding import PartitionSpec as P

OutSharding = NamedSharding | P | None


def mesh_in_sight(*operands: jax.Array | None) -> jax.sharding.AbstractMesh:
  """The mesh of the context (`jax.set_mesh`), else the first in an operand's type (an argument placed on a
  mesh, of either axis type), else the empty mesh. Arguments placed only by ``jit``'s ``in_shardings`` carry
  none."""
  mesh = jax.sharding.get_abstract_mesh()
  if mesh.empty:
    meshes = [jax.typeof(a).sharding.mesh for a in operands if a is not None]
    mesh = next((m for m in meshes if not m.empty), mesh)
  return mesh


def explicit_mesh(*operands: jax.Array | None) -> jax.sharding.AbstractMesh | None:
  """The `mesh_in_sight` if it has `Explicit` axes, else None."""
  mesh = mesh_in_sight(*operands)
  return mesh if not mesh.empty and mesh.explicit_axes else None


def _mesh_axes(entry) -> tuple[str, ...]:
  """The mesh axes a `PartitionSpec` entry names (None, a name, or a tuple of names)."""
  if entry is None or entry is P.UNCONSTRAINED:
    return ()
  return tuple(entry) if isinstance(entry, tuple) else (entry,)


def _spec(a: jax.Array) -> list:
  """The `PartitionSpec` of ``a``'s type, one entry per axis."""
  spec = list(jax.typeof(a).sharding.spec)
  return spec + [None] * (a.ndim - len(spec))


def block_shape(a: jax.Array) -> tuple[int, ...]:
  """The shape of the block of ``a`` each device holds under a mesh with `Explicit` axes (each axis divided by
  the mesh axes its type names); elsewhere ``a``'s shape (under `jax.shard_map` the local block already)."""
  mesh = explicit_mesh(a)
  if mesh is None:
    return tuple(a.shape)
  return tuple(size // math.prod(mesh.shape[name] for name in _mesh_axes(entry))
               for size, entry in zip(a.shape, _spec(a)))


def output_spec(x: jax.Array, weight: jax.Array, out_shape: tuple[int, ...], channel_axis: int,
                mesh: jax.sharding.AbstractMesh) -> P:
  """The output's `PartitionSpec` from the operands' types, axis by axis as a layer maps them.

  The batch and spatial axes keep ``x``'s mesh axes (a spatial axis only if they divide its output length);
  the channel axis takes the mesh axes of ``weight``'s output-channel axis (``C_out // group``), unless the
  batch or a spatial axis uses one of them. ``x``'s channel axis is summed over; its mesh axes name nothing.

  Raises:
    ValueError: if a sharded spatial axis's output length is not divisible by its mesh axes' devices.
  """
  spec = _spec(x)
  spec[channel_axis] = None
  for axis in range(1, x.ndim):
    devices = int(np.prod([mesh.shape[name] for name in _mesh_axes(spec[axis])]))
    if out_shape[axis] % devices:
      raise ValueError(
          f"`x`'s axis {axis} is sharded over mesh axes {spec[axis]!r} ({devices} devices), which do not divide "
          f"the output's length {out_shape[axis]} there (output shape {out_shape}): pass `out_sharding` to "
          f"choose the output's sharding, or shard that axis of `x` differently.")
  used = {name for entry in spec for name in _mesh_axes(entry)}
  channel = _spec(weight)[1]
  if not used.intersection(_mesh_axes(channel)):
    spec[channel_axis] = channel
  return P(*spec)


def batched(out_sharding: OutSharding) -> OutSharding:
  """``out_sharding`` of an unbatched output for the output with a leading unit batch axis."""
  if isinstance(out_sharding, NamedSharding):
    return out_sharding.update(spec=P(None, *out_sharding.spec))
  return P(None, *out_sharding)


def sharded(layer: Callable[..., jax.Array], x: jax.Array, weight: jax.Array, bias: jax.Array | None, *,
            out_shape: tuple[int, ...], channel_axis: int, out_sharding: OutSharding = None) -> jax.Array:
  """``layer(x, weight, bias)``, in one `jax.sharding.auto_axes` block under a mesh with `Explicit` axes.

  Args:
    layer: the whole layer, ``(x, weight, bias) -> y`` of shape ``out_shape``.
    x, weight, bias: its operands (``x`` batched).
    out_shape: the output's shape.
    channel_axis: the output's (and ``x``'s) channel axis.
    out_sharding: the output's sharding, a `NamedSharding` or a `PartitionSpec` of the context mesh; None
      derives it from the operands' types under an explicit mesh (`output_spec`) and leaves it to XLA
      elsewhere.
  """
  mesh = explicit_mesh(x, weight, bias)
  if mesh is None:
    y = layer(x, weight, bias)
    return y if out_sharding is None else lax.with_sharding_constraint(y, out_sharding)
  if out_sharding is None:
    out_sharding = output_spec(x, weight, out_shape, channel_axis, mesh)
  if not isinstance(out_sharding, NamedSharding):
    out_sharding = NamedSharding(mesh, out_sharding)
  return jax.sharding.auto_axes(layer, axes=mesh.explicit_axes, out_sharding=out_sharding)(x, weight, bias)
