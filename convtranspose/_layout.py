"""Where the batch, channel and spatial axes of an activation are, for both layouts."""


def data_axes(n: int, channels_last: bool) -> tuple[int, ...]:
  """The batch, channel and spatial axes of a batched input or output: ``(0, 1, 2, ..., n + 1)``, or
  ``(0, n + 1, 1, ..., n)`` when ``channels_last`` (the order of a `jax.lax.ConvDimensionNumbers` spec)."""
  return (0, n + 1, *range(1, n + 1)) if channels_last else tuple(range(n + 2))


def batch_shape(batch: int, channels: int, spatial: tuple[int, ...], channels_last: bool) -> tuple[int, ...]:
  """``(N, C, *spatial)``, or ``(N, *spatial, C)`` when ``channels_last``."""
  return (batch, *spatial, channels) if channels_last else (batch, channels, *spatial)
