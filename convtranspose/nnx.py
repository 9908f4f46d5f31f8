"""Flax NNX modules: the layers of `convtranspose.modules`, with their parameters made at construction, as a
MindSpore Cell makes them.

Each class takes exactly the arguments of its linen counterpart, in the same order, plus a keyword-only
``rngs`` (`flax.nnx.Rngs`; the ``params`` stream draws ``weight``, then ``bias``):

=============================  ===========================  ===========================================
MindSpore                      linen (`convtranspose`)      NNX (`convtranspose.nnx`)
=============================  ===========================  ===========================================
``nn.Conv{1,2,3}dTranspose``   ``Conv{1,2,3}dTranspose``    ``Conv{1,2,3}dTranspose``
``mint.nn.ConvTranspose2d``    ``ConvTranspose{1,2,3}d``    ``ConvTranspose{1,2,3}d``
=============================  ===========================  ===========================================

The parameters are `flax.nnx.Param` attributes named as MindSpore names them: ``weight`` (MindSpore's stored
shape) and ``bias`` (None without a bias, as Flax's ``nnx.ConvTranspose`` has it, so it is absent from
``nnx.state``). The other arguments are kept as attributes of the same names (the mint layers' ``bias`` flag
becomes the parameter), except the initializers, which are used once. With ``logical_axes=True`` the
parameters carry the logical axis names of `convtranspose.sharding` as their ``out_sharding`` metadata (Flax
0.12.4 and later; ``sharding_names`` before), which `flax.nnx.get_partition_spec` and
`flax.nnx.logical_to_mesh_sharding` read.

>>> from flax import nnx
>>> import jax.numpy as jnp
>>> import convtranspose as ct
>>> net = ct.nnx.Conv2dTranspose(3, 64, 4, has_bias=False, weight_init='normal', pad_mode='pad', rngs=nnx.Rngs(0))
>>> net.weight.shape
(3, 64, 4, 4)
>>> nnx.jit(lambda net, x: net(x))(net, jnp.ones((1, 3, 16, 50))).shape
(1, 64, 19, 53)
"""

import inspect
import types
from typing import Any, ClassVar

import flax
import jax
from flax import nnx

from convtranspose import _layers, modules

# Flax renamed the Variable metadata that holds logical axis names in 0.12.4.
_SHARDING_METADATA = ("out_sharding" if tuple(int(part) for part in flax.__version__.split(".")[:3]) >= (0, 12, 4)
                      else "sharding_names")
# Arguments used once, at construction: the initializers (possibly arrays, which NNX would take for data), and
# the mint layers' `bias` flag, whose name the parameter takes.
_CONSTRUCTION_ONLY = ("weight_init", "bias_init", "bias")


class _ConvTranspose(nnx.Module):
  """A layer of `convtranspose.modules` as an NNX module; the subclass names the linen class (``linen``)
  whose arguments it takes, and gets its signature and attribute list from it."""

  linen: ClassVar[type[modules._ConvTranspose]]
  _arguments: ClassVar[inspect.Signature]

  def __init_subclass__(cls, **kwargs):
    super().__init_subclass__(**kwargs)
    arguments = [p for p in inspect.signature(cls.linen).parameters.values() if p.name not in ("parent", "name")]
    cls._arguments = inspect.Signature(arguments)
    rngs = inspect.Parameter("rngs", inspect.Parameter.KEYWORD_ONLY, annotation=nnx.Rngs)
    cls.__signature__ = inspect.Signature([*arguments, rngs], return_annotation=None)
    # The linen class's attribute list, as arguments, with rngs added.
    attributes, closing = cls.linen.__doc__.split("Attributes:", 1)[1].split("\n\n  Every argument", 1)
    rngs_doc = "    rngs: keyword-only. `flax.nnx.Rngs` whose ``params`` stream draws the parameters."
    cls.__doc__ += f"\n  Args:{attributes}\n{rngs_doc}\n\n  Every argument{closing}"

  def __init__(self, *args: Any, rngs: nnx.Rngs, **kwargs: Any):
    bound = self._arguments.bind(*args, **kwargs)
    bound.apply_defaults()
    # Read as given, by the reader the linen module uses (the legacy vocabulary refuses lists, as MindSpore).
    _, parameters = _layers.describe(types.SimpleNamespace(**bound.arguments), self.linen.vocabulary,
                                     self.linen.num_spatial_dims)
    for name, value in bound.arguments.items():
      if name not in _CONSTRUCTION_ONLY:
        # Lists (mint takes them) as tuples: NNX keeps non-array attributes in the graph definition, hashed.
        setattr(self, name, tuple(value) if isinstance(value, list) else value)

    def param(init, shape, axes) -> nnx.Param:
      metadata = {_SHARDING_METADATA: axes} if parameters.logical_axes else {}
      return nnx.Param(init(rngs.params(), shape, parameters.dtype), **metadata)

    self.weight = param(parameters.weight_init, parameters.weight_shape, parameters.weight_axes)
    self.bias = (nnx.data(None) if parameters.bias_init is None
                 else param(parameters.bias_init, parameters.bias_shape, parameters.bias_axes))

  def __call__(self, x: jax.Array, output_size: modules.IntOrTuple | None = None,
               out_sharding: modules.OutSharding = None) -> jax.Array:
    """Applies the layer to ``x``; see the linen module's ``__call__``."""
    layer = _layers.layer(self, self.linen.vocabulary, self.linen.num_spatial_dims)
    return layer(x, self.weight[...], None if self.bias is None else self.bias[...], output_size, out_sharding)


class Conv1dTranspose(_ConvTranspose):
  """MindSpore's ``nn.Conv1dTranspose`` as an NNX module: `convtranspose.Conv1dTranspose`'s arguments and
  ``weight`` ``(C_in, C_out // group, 1, k)``, plus ``rngs``.
  """

  linen = modules.Conv1dTranspose


class Conv2dTranspose(_ConvTranspose):
  """MindSpore's ``nn.Conv2dTranspose`` as an NNX module: `convtranspose.Conv2dTranspose`'s arguments and
  ``weight`` ``(C_in, C_out // group, kH, kW)``, plus ``rngs``.

  Example usage::

    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> import convtranspose as ct
    >>> net = ct.nnx.Conv2dTranspose(8, 4, 4, 2, 'pad', 1, has_bias=True, rngs=nnx.Rngs(0))
    >>> jax.tree.map(jnp.shape, nnx.state(net, nnx.Param))
    State({
      'bias': Param(
        value=(4,)
      ),
      'weight': Param(
        value=(8, 4, 4, 4)
      )
    })
    >>> net(jnp.ones((2, 8, 16, 16))).shape
    (2, 4, 32, 32)
  """

  linen = modules.Conv2dTranspose


class Conv3dTranspose(_ConvTranspose):
  """MindSpore's ``nn.Conv3dTranspose`` as an NNX module: `convtranspose.Conv3dTranspose`'s arguments (in
  MindSpore's 3-D order, ``output_padding`` before ``has_bias``) and ``weight`` ``(C_in, C_out // group, kD, kH,
  kW)``, plus ``rngs``.
  """

  linen = modules.Conv3dTranspose


class ConvTranspose1d(_ConvTranspose):
  """PyTorch's ``nn.ConvTranspose1d`` in mint's vocabulary as an NNX module: `convtranspose.ConvTranspose1d`'s
  arguments and ``weight`` ``(C_in, C_out // groups, k)``, plus ``rngs``.
  """

  linen = modules.ConvTranspose1d


class ConvTranspose2d(_ConvTranspose):
  """MindSpore's ``mint.nn.ConvTranspose2d`` as an NNX module: `convtranspose.ConvTranspose2d`'s arguments and
  ``weight`` ``(C_in, C_out // groups, kH, kW)``, plus ``rngs``.

  Example usage::

    >>> from flax import nnx
    >>> import jax.numpy as jnp
    >>> import convtranspose as ct
    >>> up = ct.nnx.ConvTranspose2d(16, 8, 3, stride=2, padding=1, rngs=nnx.Rngs(0))
    >>> h = jnp.ones((1, 16, 6, 6))
    >>> up(h).shape, up(h, output_size=(12, 12)).shape
    ((1, 8, 11, 11), (1, 8, 12, 12))
  """

  linen = modules.ConvTranspose2d


class ConvTranspose3d(_ConvTranspose):
  """PyTorch's ``nn.ConvTranspose3d`` in mint's vocabulary as an NNX module: `convtranspose.ConvTranspose3d`'s
  arguments and ``weight`` ``(C_in, C_out // groups, kD, kH, kW)``, plus ``rngs``.
  """

  linen = modules.ConvTranspose3d
