"""Grouped and depthwise layers on one device: our algorithms against XLA's grouped convolution and PyTorch.

Usage::

    python benchmarks/grouped.py [--out benchmarks/results/cpu-grouped.json] [--repeats 10]

With ``group > 1`` every algorithm computes its convolutions as matrix products batched over the groups
(`convtranspose._grouped`), which XLA's partitioner shards correctly (docs/reliability.md). The peers: ``XLA
grouped conv`` is the lhs-dilated convolution with ``feature_group_count``, as ``jax.vjp`` of the forward
grouped convolution gives it, and as this package computed grouped layers before (neither Flax's
``nn.ConvTranspose`` nor ``jax.lax.conv_transpose`` takes groups); ``torch`` is ``conv_transpose2d``/``3d``
with ``groups``, channels-first. Every layer is MindSpore's ``pad_mode='pad'``, NCHW, float32. "forward" times
the layer; "train" a jitted ``jax.value_and_grad`` of ``mean(y ** 2)`` with respect to input and weight
(PyTorch: the loss and ``backward()``). Medians after warm-up.
"""

import argparse
import functools
import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np
import torch
from bench import blocking, machine_description, median_ms, torch_synchronized

import convtranspose as ct

# name: (batch, C_in, C_out, spatial input, kernel, stride, padding, group)
LAYERS = {
    "ResNeXt-like 16x256->256 16x16 k4 s2 g8": (16, 256, 256, (16, 16), 4, 2, 1, 8),
    "grouped 8x128->64 32x32 k3 s2 g4": (8, 128, 64, (32, 32), 3, 2, 1, 4),
    "two groups 8x64->64 32x32 k4 s2 g2": (8, 64, 64, (32, 32), 4, 2, 1, 2),
    "depthwise 8x64->64 32x32 k4 s2": (8, 64, 64, (32, 32), 4, 2, 1, 64),
    "depthwise x2 8x128->256 16x16 k3 s2": (8, 128, 256, (16, 16), 3, 2, 1, 128),
    "depthwise 3-D 2x32->32 8^3 k4 s2": (2, 32, 32, (8, 8, 8), 4, 2, 1, 32),
}
ALGORITHMS = ("auto", "dilated", "phase", "hybrid")


def operands(batch, c_in, c_out, spatial, k, group):
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, c_in, *spatial)).astype(np.float32)
  weight = rng.standard_normal((c_in, c_out // group, *(k,) * len(spatial))) / math.sqrt(c_in // group * k ** len(spatial))
  return x, weight.astype(np.float32)


def xla_grouped(x, weight, stride, padding, group):
  """``conv(dilate(x, s), flip(W))`` with ``feature_group_count``: XLA's own grouped convolution."""
  n = weight.ndim - 2
  c_in, out_per_group, *kernel = weight.shape
  kernel_oi = weight.reshape(group, c_in // group, out_per_group, *kernel).swapaxes(1, 2)
  kernel_oi = jnp.flip(kernel_oi.reshape(group * out_per_group, c_in // group, *kernel), range(2, n + 2))
  return jax.lax.conv_general_dilated(x, kernel_oi, (1,) * n, [(k - 1 - padding,) * 2 for k in kernel],
                                      lhs_dilation=(stride,) * n, feature_group_count=group)


def jax_runners(fn, x, weight):
  def loss(x, weight):
    return jnp.mean(jnp.square(fn(x, weight)))
  return blocking(jax.jit(fn), x, weight), blocking(jax.jit(jax.value_and_grad(loss, argnums=(0, 1))), x, weight)


def torch_runners(x, weight, stride, padding, group):
  layer = {2: torch.nn.functional.conv_transpose2d, 3: torch.nn.functional.conv_transpose3d}[weight.ndim - 2]
  x_t, w_t = torch.tensor(x), torch.tensor(weight)

  def forward():
    with torch.no_grad():
      return torch_synchronized(layer(x_t, w_t, None, stride, padding, groups=group))

  x_g, w_g = x_t.clone().requires_grad_(), w_t.clone().requires_grad_()

  def train():
    x_g.grad = w_g.grad = None
    loss = torch.mean(layer(x_g, w_g, None, stride, padding, groups=group) ** 2)
    loss.backward()
    return torch_synchronized((loss, x_g.grad, w_g.grad))

  return forward, train


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
  parser.add_argument("--out", type=Path)
  parser.add_argument("--repeats", type=int, default=10)
  args = parser.parse_args()
  rows = []
  for name, (batch, c_in, c_out, spatial, k, stride, padding, group) in LAYERS.items():
    x, weight = operands(batch, c_in, c_out, spatial, k, group)
    arguments = dict(stride=stride, pad_mode="pad", padding=padding, group=group)
    runners = {f"ours {a}": jax_runners(functools.partial(ct.conv_transpose, algorithm=a, **arguments), x, weight)
               for a in ALGORITHMS}
    runners["XLA grouped conv"] = jax_runners(
        functools.partial(xla_grouped, stride=stride, padding=padding, group=group), x, weight)
    runners["torch"] = torch_runners(x, weight, stride, padding, group)
    outputs = [np.asarray(runners[impl][0]()) for impl in ("ours auto", "XLA grouped conv")]
    outputs.append(runners["torch"][0]().numpy())
    for other in outputs[1:]:  # the same layer everywhere
      np.testing.assert_allclose(other, outputs[0], rtol=1e-4, atol=1e-4)
    for pass_index, pass_name in enumerate(("forward", "train")):
      times = {impl: median_ms(pair[pass_index], args.repeats) for impl, pair in runners.items()}
      rows.append(dict(layer=name, pass_=pass_name, ms=times))
      print(f"{name:40s} {pass_name:8s} " + "  ".join(f"{impl} {t:8.2f}" for impl, t in times.items()), flush=True)
  if args.out:
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(dict(machine=machine_description(), rows=rows), indent=1))
    plot(rows, args.out.with_suffix(".png"))


def plot(rows: list, path: Path) -> None:
  """Per layer and pass, ``ours auto`` over each peer (log scale; below 1: ours is faster)."""
  import matplotlib
  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  fig, axes = plt.subplots(1, 2, figsize=(12, 4.5), sharey=True)
  for ax, pass_name in zip(axes, ("forward", "train")):
    selected = [r for r in rows if r["pass_"] == pass_name]
    ticks = np.arange(len(selected))
    for offset, peer in ((-0.2, "XLA grouped conv"), (0.2, "torch")):
      ax.barh(ticks + offset, [r["ms"]["ours auto"] / r["ms"][peer] for r in selected], 0.4, label=f"over {peer}")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(ticks, [r["layer"] for r in selected])
    ax.set_title(f"{pass_name}: ours (auto) over the peer")
  fig.legend(*axes[0].get_legend_handles_labels(), loc="lower center", ncol=2)
  fig.tight_layout(rect=(0, 0.08, 1, 1))
  fig.savefig(path, dpi=110)


if __name__ == "__main__":
  main()
