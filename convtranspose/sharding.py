"""Logical axis names for sharding the layers with `jax.sharding`, and the rules that map them to a mesh.

A layer built with ``logical_axes=True`` creates its parameters as `flax.linen.LogicallyPartitioned` values
named by axis: ``weight`` ``(C_in, C_out // group, *kernel)`` as ``('conv_in', 'conv_out', None, ...)`` (a
depthwise layer's, with one output channel per group, as ``('conv_out', None, ...)``: `weight_axes`) and
``bias`` ``(C_out,)`` as ``('conv_out',)``. `axis_rules` maps those names (and ``'batch'`` for inputs) onto the
axes of a `jax.sharding.Mesh`: the batch over the data-parallel axis, the output channels over the
model-parallel axis, everything else replicated. XLA's SPMD partitioner does the rest.

>>> axis_rules()
(('batch', 'data'), ('conv_out', 'model'), ('conv_in', None))
>>> weight_axes(4)
('conv_in', 'conv_out', None, None)
"""

BATCH = "batch"
IN_CHANNELS = "conv_in"
OUT_CHANNELS = "conv_out"
BIAS_AXES = (OUT_CHANNELS,)


def weight_axes(ndim: int, out_per_group: int | None = None) -> tuple[str | None, ...]:
  """The logical names of a weight of ``ndim`` axes, ``(C_in, C_out // group, *kernel)``; kernel axes unnamed.

  With one output channel per group (``out_per_group == 1``: depthwise layers), the output channels are the
  groups, which run along the first axis (group ``g`` in rows ``[g * C_in / G, (g + 1) * C_in / G)``), so
  that axis is named ``'conv_out'``: sharded there, each device holds whole groups, and the output channels
  they make, as the bias's ``'conv_out'`` says.

  >>> weight_axes(4, out_per_group=1)
  ('conv_out', None, None, None)
  """
  if out_per_group == 1:
    return (OUT_CHANNELS,) + (None,) * (ndim - 1)
  return (IN_CHANNELS, OUT_CHANNELS) + (None,) * (ndim - 2)


def axis_rules(data: str | None = "data", model: str | None = "model") -> tuple[tuple[str, str | None], ...]:
  """Rules for `flax.linen.logical_to_mesh_sharding`: batch over ``data``, output channels over ``model``.

  Args:
    data: the mesh axis that splits the batch (data parallel); None replicates the batch.
    model: the mesh axis that splits the output channels (model parallel); None replicates them.
  """
  return ((BATCH, data), (OUT_CHANNELS, model), (IN_CHANNELS, None))
