"""Forward and training-step times of the three algorithms on CPU-relevant layers: the data behind ``'auto'``.

Usage::

    python benchmarks/algorithms.py

Each layer (MindSpore ``pad_mode='pad'``, NCHW input, fp32) is timed with ``algorithm='dilated'``,
``'phase'`` and ``'hybrid'``, then the choice ``'auto'`` makes is printed beside them
(`convtranspose.functional._choose_algorithm` quotes these numbers). The lhs-dilated training step is
XLA's slow weight gradient on CPU (hundreds of milliseconds), so ``dilated`` is timed forward only.
"""

import functools
import sys

import jax
from bench import jax_runner, layer_operands, median_ms

from convtranspose import _arguments, functional

# (batch, C_in, C_out, spatial input, kernel, stride, padding, output_padding)
LAYERS = [
    (32, 512, 256, (4, 4), 3, 2, 1, 1),
    (8, 128, 128, (16, 16), 3, 2, 1, 1),
    (4, 128, 128, (32, 32), 3, 2, 1, 0),
    (8, 128, 64, (16, 16), 5, 2, 2, 1),
    (16, 64, 32, (32, 32), 3, 2, 1, 1),
    (8, 64, 128, (16, 16), 3, 2, 1, 1),
    (8, 64, 256, (32, 32), 3, 2, 1, 1),
    (8, 64, 64, (32, 32), 4, 2, 1, 0),
    (8, 96, 96, (16, 16), 6, 4, 1, 0),
    (8, 128, 64, (256,), 3, 2, 1, 1),
    (4, 256, 128, (128,), 3, 2, 1, 1),
    (2, 32, 16, (8, 8, 8), 4, 2, 1, 0),
]


def main() -> None:
  print(f"{jax.devices()[0].device_kind}, jax {jax.__version__}; milliseconds, forward / training step")
  for batch, c_in, c_out, spatial, k, s, p, op in LAYERS:
    x, weight = layer_operands(batch, c_in, c_out, spatial, k)
    cells = []
    for algorithm in ("dilated", "phase", "hybrid"):
      layer = functools.partial(functional.conv_transpose, bias=None, stride=s, pad_mode="pad", padding=p,
                                output_padding=op, algorithm=algorithm)
      forward, train = jax_runner(layer, x, weight)
      times = [min(median_ms(forward, 5) for _ in range(2))]
      if algorithm != "dilated":
        times.append(min(median_ms(train, 3) for _ in range(2)))
      cells.append(f"{algorithm} " + " / ".join(f"{t:7.2f}" for t in times))
    geometry = _arguments.geometry(len(spatial), k, s, "pad", p, 1, 1, output_padding=op)
    auto = functional._choose_algorithm("auto", geometry, c_in, c_out)
    print(f"{batch}x{c_in}->{c_out} {'x'.join(map(str, spatial))} k{k} s{s}: " + " | ".join(cells) + f" | auto: {auto}",
          flush=True)


if __name__ == "__main__":
  sys.exit(main())
