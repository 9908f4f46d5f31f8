"""Side-by-side timings: convtranspose against Flax, ``jax.lax.conv_transpose`` and PyTorch, in one process.

Usage::

    python benchmarks/bench.py                     # every layer, fp32 and bf16, forward and training step
    python benchmarks/bench.py --quick             # three layers, fp32: a smoke run (about a minute)
    python benchmarks/bench.py --out benchmarks/results/cpu.json

Every implementation computes the same layer (MindSpore's ``pad_mode='pad'`` with ``padding``), each in the
form its own users write it (`peers`): Flax and lax with their own kernel ``(*k, C_in, C_out)`` converted once
from the MindSpore weight and ``padding='SAME'`` where the layer doubles its input, PyTorch with its own weight
in NCHW and channels-last; ours with the MindSpore weight. "forward" times the jitted layer alone; "train" a
jitted `jax.value_and_grad` of the mean squared error of the output to a target, with respect to the input and
the weight (PyTorch: that loss's ``backward()``). Each is warmed up, then timed over back-to-back calls; the
median is reported, with its ratio to the best peer.

Implementations: ``ours NCHW`` (MindSpore's layout, ``algorithm='auto'``), ``ours NHWC``, ``ours dilated``
(the lhs-dilated reference, NCHW), ``flax`` (``nn.ConvTranspose``, NHWC), ``lax`` (``jax.lax.conv_transpose``,
NHWC), ``torch`` (channels-first) and ``torch CL`` (channels-last memory format).

One more column is not a layer: ``XLA matmul floor`` times a single XLA matrix product with exactly the
layer's multiply-adds, ``(N * prod(L), C_in) @ (C_in, prod(k) * C_out)``, and for "train" that product with
the two products of its gradients (`floor_runner`). Any formulation built from XLA's kernels needs that much
arithmetic, and more work for moving data (patches, interleaving, layout): the floor estimates the least time
such a program takes. An estimate, not a strict bound, since a product's speed depends on its shape.
"""

import argparse
import json
import math
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import flax
import jax
import jax.numpy as jnp
import numpy as np
import peers
import torch

import convtranspose as ct

# name: (batch, C_in, C_out, spatial input, kernel, stride, padding); MindSpore 'pad' mode, group 1.
LAYERS = {
    "DCGAN 32x256->128 8x8 k4 s2": (32, 256, 128, (8, 8), 4, 2, 1),
    "DCGAN 8x64->32 32x32 k4 s2": (8, 64, 32, (32, 32), 4, 2, 1),
    "StyleGAN-like 4x128->128 32x32 k3 s2": (4, 128, 128, (32, 32), 3, 2, 1),
    "U-Net 8x128->64 32x32 k2 s2": (8, 128, 64, (32, 32), 2, 2, 0),
    "FCN 4x21->21 16x16 k4 s2": (4, 21, 21, (16, 16), 4, 2, 1),
    "VAE 16x64->64 16x16 k4 s2": (16, 64, 64, (16, 16), 4, 2, 1),
    "stride 1 8x64->64 16x16 k3": (8, 64, 64, (16, 16), 3, 1, 1),
    "audio 1-D 4x128->64 L256 k16 s8": (4, 128, 64, (256,), 16, 8, 4),
    "audio 1-D 8x64->32 L1024 k8 s4": (8, 64, 32, (1024,), 8, 4, 2),
    "medical 3-D 2x32->16 8^3 k4 s2": (2, 32, 16, (8, 8, 8), 4, 2, 1),
    # The last layer of a generator, an autoencoder or a segmentation decoder: 1-3 output channels.
    "output 16x64->1 32x32 k4 s2": (16, 64, 1, (32, 32), 4, 2, 1),
    "output 16x64->3 32x32 k4 s2": (16, 64, 3, (32, 32), 4, 2, 1),
    "output 8x32->3 128x128 k4 s2": (8, 32, 3, (128, 128), 4, 2, 1),
    "output 8x128->3 64x64 k4 s2": (8, 128, 3, (64, 64), 4, 2, 1),
    "output 4x64->3 64x64 k5 s2": (4, 64, 3, (64, 64), 5, 2, 2),
    "output 8x64->1 64x64 k3 s1": (8, 64, 1, (64, 64), 3, 1, 1),
    "output 4x32->3 128x128 k7 s1": (4, 32, 3, (128, 128), 7, 1, 3),
    "output 1-D 8x64->1 L1024 k8 s4": (8, 64, 1, (1024,), 8, 4, 2),
    "output 3-D 2x32->1 16^3 k4 s2": (2, 32, 1, (16, 16, 16), 4, 2, 1),
    # Thin inputs, and large images with few channels.
    "thin 8x16->8 64x64 k3 s2": (8, 16, 8, (64, 64), 3, 2, 1),
    "thin 4x16->64 64x64 k4 s2": (4, 16, 64, (64, 64), 4, 2, 1),
    "large 2x8->8 256x256 k4 s2": (2, 8, 8, (256, 256), 4, 2, 1),
}
QUICK = ("DCGAN 8x64->32 32x32 k4 s2", "U-Net 8x128->64 32x32 k2 s2", "audio 1-D 4x128->64 L256 k16 s8")
PEERS = ("flax", "lax", "torch", "torch CL")
DTYPES = {"fp32": (jnp.float32, torch.float32), "bf16": (jnp.bfloat16, torch.bfloat16)}  # name: (JAX, PyTorch)
TORCH_TRANSPOSED = {1: torch.nn.functional.conv_transpose1d, 2: torch.nn.functional.conv_transpose2d,
                    3: torch.nn.functional.conv_transpose3d}


def median_ms(fn, repeats: int) -> float:
  """Median wall time of ``fn()`` after two warm-up calls (compilation, caches), in milliseconds."""
  fn()
  fn()
  times = []
  for _ in range(repeats):
    start = time.perf_counter()
    fn()
    times.append(time.perf_counter() - start)
  return 1e3 * statistics.median(times)


def blocking(fn, *args):
  """A zero-argument callable that runs ``fn(*args)`` to completion (JAX dispatches asynchronously)."""
  return lambda: jax.block_until_ready(fn(*args))


def target_of_shape(shape: tuple[int, ...]) -> np.ndarray:
  """A seeded random target for the training step's loss, in float32."""
  return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


def jax_runner(fn, x, weight, target):
  """``(forward, train)``: zero-argument callables running the jitted layer and its training step
  (`peers.training_step`; ``target`` in the output's shape and layout)."""
  return blocking(jax.jit(fn), x, weight), blocking(jax.jit(peers.training_step(fn)), x, weight, target)


# PyTorch runs where JAX runs: on the GPU when JAX's default backend is one (CUDA or ROCm builds of both).
TORCH_DEVICE = torch.device("cuda" if jax.default_backend() == "gpu" and torch.cuda.is_available() else "cpu")
torch.backends.cudnn.benchmark = True  # as PyTorch's users train on a GPU: cuDNN's fastest algorithm per shape


def torch_synchronized(result):
  """``result`` once the device has computed it (PyTorch's CUDA calls return before they finish)."""
  if TORCH_DEVICE.type == "cuda":
    torch.cuda.synchronize()
  return result


def torch_runner(x: np.ndarray, weight: np.ndarray, target: np.ndarray, stride: int, padding: int, dtype,
                 channels_last: bool):
  n = x.ndim - 2
  x_t = torch.tensor(x, dtype=dtype, device=TORCH_DEVICE)
  w_t = torch.tensor(weight, dtype=dtype, device=TORCH_DEVICE)
  if channels_last:
    memory_format = {1: torch.contiguous_format, 2: torch.channels_last, 3: torch.channels_last_3d}[n]
    x_t, w_t = x_t.contiguous(memory_format=memory_format), w_t.contiguous(memory_format=memory_format)
  layer = TORCH_TRANSPOSED[n]

  def forward():
    with torch.no_grad():
      return torch_synchronized(layer(x_t, w_t, None, stride, padding))

  x_g, w_g = x_t.clone().requires_grad_(), w_t.clone().requires_grad_()
  target = torch.tensor(target, device=TORCH_DEVICE)

  def train():
    x_g.grad = w_g.grad = None
    loss = torch.nn.functional.mse_loss(layer(x_g, w_g, None, stride, padding).float(), target)
    loss.backward()
    return torch_synchronized((loss, x_g.grad, w_g.grad))

  return forward, train


def layer_operands(batch: int, c_in: int, c_out: int, spatial: tuple, k: int) -> tuple[np.ndarray, np.ndarray]:
  """A seeded float32 input ``(N, C_in, *L)`` and MindSpore weight ``(C_in, C_out, *k)``, unit-variance output."""
  rng = np.random.default_rng(0)
  x = rng.standard_normal((batch, c_in, *spatial)).astype(np.float32)
  weight = rng.standard_normal((c_in, c_out, *(k,) * len(spatial))) / math.sqrt(c_in * k ** len(spatial))
  return x, weight.astype(np.float32)


def runners(layer: tuple, dtype_name: str) -> dict:
  """``{implementation: (forward, train)}`` for one layer; ``forward()`` returns the output (NCHW for ours
  and PyTorch, NHWC for ``ours NHWC``, Flax and lax), ``train()`` the loss and the gradients of the input and
  of the implementation's own weight, so that a test can check they all compute one layer."""
  batch, c_in, c_out, spatial, k, s, p = layer
  n = len(spatial)
  x, weight = layer_operands(batch, c_in, c_out, spatial, k)
  dtype, torch_dtype = DTYPES[dtype_name]
  x_j, w_j = jnp.asarray(x, dtype), jnp.asarray(weight, dtype)
  x_last = jnp.moveaxis(x_j, 1, -1)
  channels_last = peers.CHANNELS_LAST[n]
  kernel = jnp.asarray(ct.convert.flax_kernel(weight), dtype)  # the peers' own parameter, converted once
  target = target_of_shape((batch, c_out, *ct.conv_transpose_output_shape(spatial, k, s, "pad", p)))
  target_last = jnp.asarray(np.moveaxis(target, 1, -1))
  return {
      "ours NCHW": jax_runner(lambda x, w: ct.conv_transpose(x, w, None, s, "pad", p), x_j, w_j, target),
      "ours NHWC": jax_runner(lambda x, w: ct.conv_transpose(x, w, None, s, "pad", p, data_format=channels_last),
                              x_last, w_j, target_last),
      "ours dilated": jax_runner(lambda x, w: ct.conv_transpose(x, w, None, s, "pad", p, algorithm="dilated"),
                                 x_j, w_j, target),
      "flax": jax_runner(peers.flax_layer(n, c_out, k, s, p, dtype=dtype), x_last, kernel, target_last),
      "lax": jax_runner(peers.lax_layer(n, k, s, p), x_last, kernel, target_last),
      "torch": torch_runner(x, weight, target, s, p, torch_dtype, False),
      "torch CL": torch_runner(x, weight, target, s, p, torch_dtype, True),
  }


FLOOR = "XLA matmul floor"


def floor_runner(layer: tuple, dtype_name: str):
  """``(forward, train)`` of XLA matrix products with the layer's multiply-adds (see the module docstring).

  ``forward`` is the product ``z = rows @ columns``; ``train`` is it and the two products of its gradients,
  ``cotangent @ columns.T`` and ``rows.T @ cotangent``, for a given cotangent of ``z``: three products and
  nothing else, where a layer's training step has the same three amounts of arithmetic and more.
  """
  batch, c_in, c_out, spatial, k, _, _ = layer
  dtype = DTYPES[dtype_name][0]
  rng = np.random.default_rng(0)
  rows = jnp.asarray(rng.standard_normal((batch * math.prod(spatial), c_in)), dtype)
  columns = jnp.asarray(rng.standard_normal((c_in, k ** len(spatial) * c_out)) / math.sqrt(c_in), dtype)
  cotangent = jnp.asarray(rng.standard_normal((rows.shape[0], columns.shape[1])), dtype)

  def product(a, b):  # float32 accumulation: XLA's fastest bf16 product on CPU; the plain product in fp32
    return jnp.matmul(a, b, preferred_element_type=jnp.float32).astype(dtype)

  forward = jax.jit(product)
  train = jax.jit(lambda a, b, g: (product(a, b), product(g, b.T), product(a.T, g)))
  return blocking(forward, rows, columns), blocking(train, rows, columns, cotangent)


def main() -> None:
  parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
  parser.add_argument("--quick", action="store_true", help="three layers, fp32 only")
  parser.add_argument("--dtypes", default="fp32,bf16")
  parser.add_argument("--repeats", type=int, default=9, help="timed calls per measurement (median)")
  parser.add_argument("--out", type=Path, help="JSON file to write (a PNG plot is written beside it)")
  args = parser.parse_args()
  names = QUICK if args.quick else tuple(LAYERS)
  dtypes = ("fp32",) if args.quick else tuple(args.dtypes.split(","))
  rows = []
  for dtype_name in dtypes:
    for name in names:
      for phase_name, index in (("forward", 0), ("train", 1)):
        implementations = {**runners(LAYERS[name], dtype_name), FLOOR: floor_runner(LAYERS[name], dtype_name)}
        timings = {impl: median_ms(run[index], args.repeats if index == 0 else max(3, args.repeats // 3))
                   for impl, run in implementations.items()}
        best_peer = min(timings[peer] for peer in PEERS)
        row = dict(layer=name, dtype=dtype_name, pass_=phase_name, ms=timings,
                   ratio_to_best_peer={impl: t / best_peer for impl, t in timings.items()})
        rows.append(row)
        print(f"{dtype_name} {phase_name:7} {name:40} " +
              "  ".join(f"{impl} {t:8.2f}" for impl, t in timings.items()) +
              f"  | ours NCHW / best peer {row['ratio_to_best_peer']['ours NCHW']:.2f}x", flush=True)
        if args.out:  # after every row: a run stopped at a time limit keeps what it measured
          save(rows, args.out)
  for key, value in summarize(rows).items():
    print(f"{key}, time / best peer: " + "; ".join(f"{impl} geometric mean {v['geomean']:.2f}x, worst "
                                                     f"{v['worst']:.2f}x" for impl, v in value.items()))
  if args.out:
    plot(rows, args.out.with_suffix(".png"), machine_description())


def summarize(rows: list) -> dict:
  """``{"<dtype> <pass>": {implementation: {geomean, worst}}}`` of the ratios to the best peer."""
  summary = {}
  for row in rows:
    summary.setdefault(f"{row['dtype']} {row['pass_']}", []).append(row)
  return {key: {impl: geomean_and_worst([r["ratio_to_best_peer"][impl] for r in selected])
                for impl in ("ours NCHW", "ours NHWC", FLOOR)}
          for key, selected in summary.items()}


def save(rows: list, path: Path) -> None:
  path.parent.mkdir(parents=True, exist_ok=True)
  path.write_text(json.dumps(dict(machine=machine_description(), rows=rows, summary=summarize(rows)), indent=1))


def cpu_model() -> str:
  """The CPU's model name and its matrix extensions (`convtranspose.tuning.processor`, which keys the tuning
  tables): whether bf16 products run on AMX tiles or AVX-512 changes every bf16 timing."""
  return ct.tuning.processor()


def machine_description() -> dict:
  machine = dict(platform=platform.platform(), processor=platform.processor(), cpu=cpu_model(), cpu_count=os.cpu_count(),
                 jax=jax.__version__, flax=flax.__version__, torch=torch.__version__, backend=jax.default_backend(),
                 device=str(jax.devices()[0].device_kind), torch_device=str(TORCH_DEVICE),
                 torch_threads=torch.get_num_threads())
  if TORCH_DEVICE.type == "cuda":  # fp32 convolutions: both sides' defaults, TF32 on Ampere and newer
    machine.update(torch_cudnn_allow_tf32=torch.backends.cudnn.allow_tf32,
                   jax_default_matmul_precision=str(jax.config.jax_default_matmul_precision),
                   xla_flags=os.environ.get("XLA_FLAGS", ""))
  return machine


def geomean_and_worst(ratios: list) -> dict:
  return dict(geomean=math.exp(statistics.fmean(map(math.log, ratios))), worst=max(ratios))


def plot(rows: list, path: Path, machine: dict) -> None:
  import matplotlib

  matplotlib.use("Agg")
  import matplotlib.pyplot as plt

  groups = sorted({(r["dtype"], r["pass_"]) for r in rows})
  fig, axes = plt.subplots(1, len(groups), figsize=(5 * len(groups), 6), sharey=True, squeeze=False)
  for ax, (dtype_name, phase_name) in zip(axes[0], groups):
    selected = [r for r in rows if r["dtype"] == dtype_name and r["pass_"] == phase_name]
    impls = list(selected[0]["ms"])
    for i, impl in enumerate(impls):
      ax.barh(np.arange(len(selected)) + i / (len(impls) + 1), [r["ratio_to_best_peer"][impl] for r in selected],
              height=1 / (len(impls) + 1), label=impl)
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(np.arange(len(selected)) + 0.4, [r["layer"] for r in selected], fontsize=7)
    ax.set_title(f"{dtype_name} {phase_name}: time / best peer")
  axes[0][0].legend(fontsize=7)
  fig.suptitle(f"{machine['device']} ({machine['backend']}), jax {machine['jax']}, torch {machine['torch']}")
  fig.tight_layout()
  fig.savefig(path, dpi=110)


if __name__ == "__main__":
  sys.exit(main())
