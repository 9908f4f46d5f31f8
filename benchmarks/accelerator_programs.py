"""What XLA compiles for an H100 and for TPU v5e/v6e, on a machine with neither: kernels, work, cycles.

Usage::

    python benchmarks/accelerator_programs.py                       # H100, v5e and v6e: every layer
    python benchmarks/accelerator_programs.py --chips h100 --dtypes fp32 bf16
    python benchmarks/accelerator_programs.py --chips v6e --layers "DCGAN 16x256->128 32x32 k4 s2"
    python benchmarks/accelerator_programs.py --chips v6e v5e --copy-free  # the phases without their copies

It needs the compile-only plugins: ``pip install -e '.[accelerators]'`` (jax's CUDA 12 plugin and PJRT
wheels, and libtpu). With ``JAX_PLATFORMS=cpu`` (set here before JAX is imported) jaxlib registers a
compile-only CUDA topology from XLA's H100 SXM description (``benchmarks/h100_sxm.txtpb``) and libtpu its
TPU topologies; ``jax.jit(f).lower(...).compile()`` then builds the program a real chip would run. XLA
cannot autotune without a device, so every cuDNN call has its default algorithm: these are programs, not
times. Per program it reports:

* GPU: each cuDNN convolution's kind (``convForward``, ``convBackwardInput``, ``convBackwardFilter``; a
  fused bias/activation forward counts as a forward), its multiply-adds counted from its shapes
  (``prod(output of the forward convolution) * input features per group * prod(window)``), the other
  kernels, how many of them only move an activation between layouts (transposes and copies larger than the
  weight; the weight's own relayout is not counted), whether any operand is
  zero-stuffed (a ``pad`` with interior padding, the dilated input materialized), and the temporary memory
  (``memory_analysis``). ``work`` is the multiply-adds over the useful ones,
  ``passes * N * prod(L_in) * C_in * C_out / G * prod(k)`` (one pass forward, three in a training step: the
  value, the input gradient, the weight gradient).
* TPU: XLA:TPU's static cost model: the sum of every kernel's ``estimated_cycles``, the flops of
  ``cost_analysis()`` over the useful flops, its bytes, and the kernels.

"forward" is the layer; "train" the training step of `peers`: `jax.value_and_grad` of the mean squared error
of the output to a target, with respect to the input and the weight. Peers: Flax ``nn.ConvTranspose`` and
``jax.lax.conv_transpose`` as their users write them (`peers`: NHWC, their own kernel ``(*k, C_in, C_out)`` as a
parameter, ``padding='SAME'`` where the layer doubles the input), beside ours with its MindSpore weight and
MindSpore's NCHW input, and with NHWC. Results: ``benchmarks/results/accelerator-programs.json`` and a readable
``accelerator-programs.md``.
"""

import os

os.environ.setdefault("JAX_PLATFORMS", "cpu")  # before JAX: the plugins then register compile-only topologies
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import argparse
import dataclasses
import functools
import json
import math
import re
import sys
import time
from pathlib import Path

import jax
import jax.numpy as jnp
import peers
from jax import lax

import convtranspose as ct
from convtranspose import _shapes

HERE = Path(__file__).resolve().parent
TARGET_CONFIG = HERE / "h100_sxm.txtpb"


@dataclasses.dataclass(frozen=True)
class Layer:
  """One layer of the suite: MindSpore ``pad_mode='pad'``; ``spatial`` is the input's."""

  batch: int
  c_in: int
  c_out: int
  spatial: tuple[int, ...]
  k: int
  s: int
  p: int
  d: int = 1
  group: int = 1
  output_padding: int = 0

  @property
  def useful_macs(self) -> int:
    """``N * prod(L_in) * C_in * C_out / G * prod(k)``: every multiply-add the layer needs, once."""
    return (self.batch * math.prod(self.spatial) * self.c_in * self.c_out // self.group
            * self.k ** len(self.spatial))

  def function(self, data_format: str, algorithm: str):
    return functools.partial(ct.conv_transpose, stride=self.s, pad_mode="pad", padding=self.p, dilation=self.d,
                             group=self.group, output_padding=self.output_padding, data_format=data_format,
                             algorithm=algorithm)


# The CPU benchmark's ten layers (benchmarks/bench.py) and what they lack: groups, depthwise, dilation,
# output_padding, and the large layers of the accelerator issue.
SUITE = {
    "DCGAN 32x256->128 8x8 k4 s2": Layer(32, 256, 128, (8, 8), 4, 2, 1),
    "DCGAN 8x64->32 32x32 k4 s2": Layer(8, 64, 32, (32, 32), 4, 2, 1),
    "StyleGAN-like 4x128->128 32x32 k3 s2": Layer(4, 128, 128, (32, 32), 3, 2, 1),
    "U-Net 8x128->64 32x32 k2 s2": Layer(8, 128, 64, (32, 32), 2, 2, 0),
    "FCN 4x21->21 16x16 k4 s2": Layer(4, 21, 21, (16, 16), 4, 2, 1),
    "VAE 16x64->64 16x16 k4 s2": Layer(16, 64, 64, (16, 16), 4, 2, 1),
    "stride 1 8x64->64 16x16 k3": Layer(8, 64, 64, (16, 16), 3, 1, 1),
    "audio 1-D 4x128->64 L256 k16 s8": Layer(4, 128, 64, (256,), 16, 8, 4),
    "audio 1-D 8x64->32 L1024 k8 s4": Layer(8, 64, 32, (1024,), 8, 4, 2),
    "medical 3-D 2x32->16 8^3 k4 s2": Layer(2, 32, 16, (8, 8, 8), 4, 2, 1),
    "DCGAN 16x256->128 32x32 k4 s2": Layer(16, 256, 128, (32, 32), 4, 2, 1),
    "U-Net 16x256->128 64x64 k2 s2": Layer(16, 256, 128, (64, 64), 2, 2, 0),
    "ResNet stride 1 32x128->128 56x56 k3": Layer(32, 128, 128, (56, 56), 3, 1, 1),
    "grouped 16x256->256 32x32 k4 s2 g8": Layer(16, 256, 256, (32, 32), 4, 2, 1, group=8),
    "depthwise 8x128->128 32x32 k4 s2": Layer(8, 128, 128, (32, 32), 4, 2, 1, group=128),
    "dilated 8x64->64 16x16 k3 s2 d2": Layer(8, 64, 64, (16, 16), 3, 2, 2, d=2, output_padding=1),
    "output_padding 8x128->64 16x16 k3 s2": Layer(8, 128, 64, (16, 16), 3, 2, 1, output_padding=1),
}
DTYPES = {"fp32": jnp.float32, "bf16": jnp.bfloat16}
PEERS = ("flax", "lax")
CHANNELS_LAST = peers.CHANNELS_LAST
CHANNELS_FIRST = {1: "NCL", 2: "NCHW", 3: "NCDHW"}


@functools.cache
def device(chip: str) -> jax.Device:
  """The compile-only device of ``chip``: ``'h100'``, ``'v5e'``, ``'v6e'`` (or ``'v5p'``)."""
  from jax.experimental import topologies
  if chip == "h100":
    return topologies.get_topology_desc(platform="cuda", topology="1x1x1",
                                        target_config=TARGET_CONFIG.read_text()).devices[0]
  name = {"v5p": "v5p:1x1x1"}.get(chip, f"{chip}:1x1")
  return topologies.get_topology_desc(topology_name=name, platform="tpu", chips_per_host_bounds=[1, 1, 1]).devices[0]


def implementations(layer: Layer) -> dict:
  """``{name: (function of (x, weight), channels_last)}``: ours in both layouts and algorithms, and the peers
  (``flax``, ``lax``), whose weight is their own kernel (`peers`). The peers have no groups."""
  n = len(layer.spatial)
  first, last = CHANNELS_FIRST[n], CHANNELS_LAST[n]
  ours = {f"ours {algorithm}": (layer.function(first, algorithm), False)
          for algorithm in ("auto", "dilated", "phase", "hybrid")}
  ours["ours auto NHWC"] = (layer.function(last, "auto"), True)
  if layer.group > 1:
    return ours
  window = (layer.k, layer.s, layer.p, layer.d, layer.output_padding)
  return {**ours, "flax": (peers.flax_layer(n, layer.c_out, *window), True), "lax": (peers.lax_layer(n, *window), True)}


def compile_program(fn, layer: Layer, dtype, channels_last: bool, chip: str, train: bool = False,
                    peer: bool = False):
  """The layer ``fn(x, weight)`` compiled for ``chip``, or with ``train`` its training step (`peers`; the target
  has the output's shape and layout). ``weight`` is MindSpore's ``(C_in, C_out // group, *k)``, or with ``peer``
  the peers' own kernel ``(*k, C_in, C_out)``."""
  sharding = jax.sharding.SingleDeviceSharding(device(chip))
  n = len(layer.spatial)
  x_shape = (layer.batch, *layer.spatial, layer.c_in) if channels_last else (layer.batch, layer.c_in,
                                                                               *layer.spatial)
  w_shape = (peers.flax_kernel_shape(n, layer.c_in, layer.c_out, layer.k) if peer
             else (layer.c_in, layer.c_out // layer.group, *(layer.k,) * n))
  arguments = [jax.ShapeDtypeStruct(shape, dtype, sharding=sharding) for shape in (x_shape, w_shape)]
  if train:
    y = jax.eval_shape(fn, *arguments)
    fn = peers.training_step(fn)
    arguments.append(jax.ShapeDtypeStruct(y.shape, jnp.float32, sharding=sharding))
  return jax.jit(fn).lower(*arguments).compile()


_INSTRUCTION = re.compile(r"^\s*(?:ROOT )?%(\S+) = (\([^=]*?\)|\S+) ([\w-]+)\((.*)$")
_NOT_KERNELS = {"parameter", "get-tuple-element", "bitcast", "tuple", "constant", "copy-start", "copy-done",
                "opt-barrier", "after-all", "partition-id", "replica-id"}
CONVOLUTION_KINDS = {"__cudnn$convForward": "forward", "__cudnn$convBiasActivationForward": "forward",
                     "__cudnn$convBackwardInput": "backward-input", "__cudnn$convBackwardFilter": "backward-filter"}


def _dims(hlo_type: str) -> list[int]:
  """The dimensions of an HLO type (the first element of a tuple)."""
  match = re.search(r"\[([\d,]*)\]", hlo_type)
  return [int(d) for d in match.group(1).split(",") if d] if match else []


def _entry(text: str) -> list[tuple[str, str, str, str]]:
  """``(name, type, opcode, rest)`` of every instruction of the entry computation."""
  entry = text[text.index("\nENTRY"):]
  entry = entry[:entry.index("\n}")]
  return [m.groups() for m in map(_INSTRUCTION.match, entry.splitlines()[1:]) if m]


def gpu_program(compiled, layer: Layer, passes: int) -> dict:
  """The kernels of a compiled GPU program and the work of its cuDNN convolutions (see the module doc)."""
  text = compiled.as_text()
  instructions = _entry(text)
  shapes = {name: _dims(hlo_type) for name, hlo_type, _, _ in instructions}
  weight_size = layer.c_in * layer.c_out // layer.group * layer.k ** len(layer.spatial)
  convolutions, windows, kernels, layout_kernels, macs = [], [], 0, 0, 0
  for name, hlo_type, opcode, rest in instructions:
    if opcode in _NOT_KERNELS:
      continue
    kernels += 1
    target = re.search(r'custom_call_target="([^"]+)"', rest)
    if target and target.group(1) in CONVOLUTION_KINDS:
      kind = CONVOLUTION_KINDS[target.group(1)]
      operands = re.findall(r"%([\w.-]+)", rest.split(")", 1)[0])
      kernel_labels = re.search(r"dim_labels=\w+_(\w+)->", rest).group(1)
      kernel = _dims(hlo_type) if kind == "backward-filter" else shapes[operands[1]]
      output = {"forward": _dims(hlo_type), "backward-input": shapes[operands[0]],
                "backward-filter": shapes[operands[1]]}[kind]
      window = [int(size) for size in re.search(r"size=([\dx]+)", rest).group(1).split("x")]
      call = math.prod(output) * kernel[kernel_labels.index("i")] * math.prod(window)
      convolutions.append(kind)
      windows.append(window)
      macs += call
    elif ((opcode in ("transpose", "copy") or (opcode == "fusion" and "transpose" in name))
          and math.prod(_dims(hlo_type)) > weight_size):  # an activation's, not the weight's
      layout_kernels += 1
  stuffed = any(part.count("_") == 2 and not part.endswith("_0")
                for padding in re.findall(r"\bpad\(.*?padding=([\d_x-]+)", text) for part in padding.split("x"))
  unlowered = sum(opcode == "convolution" for _, _, opcode, _ in instructions)
  return {"convolutions": convolutions, "windows": windows, "unlowered_convolutions": unlowered, "kernels": kernels,
          "layout_kernels": layout_kernels, "zero_stuffed": stuffed, "work": macs / (passes * layer.useful_macs),
          "temp_bytes": compiled.memory_analysis().temp_size_in_bytes}


def _kernel_cycles(compiled) -> list[tuple[str, int]]:
  """``(opcode, estimated cycles)`` of each kernel of a compiled TPU program, in order."""
  return [(op, int(m.group(1))) for _, _, op, rest in _entry(compiled.as_text())
          for m in [re.search(r'"estimated_cycles":"?(\d+)', rest)] if m]


def tpu_program(compiled, layer: Layer, passes: int) -> dict:
  """XLA:TPU's estimate of a compiled program: cycles of its kernels, flops, bytes."""
  cycles = [c for _, c in _kernel_cycles(compiled)]
  cost = compiled.cost_analysis()
  cost = cost[0] if isinstance(cost, list) else cost
  return {"cycles": sum(cycles), "kernels": len(cycles), "work": cost["flops"] / (2 * passes * layer.useful_macs),
          "bytes": cost["bytes accessed"], "temp_bytes": compiled.memory_analysis().temp_size_in_bytes}


def copy_free_phase(layer: Layer, chip: str) -> dict:
  """What a phase formulation of ``layer`` that moved neither its kernel nor its phases would cost on ``chip``,
  by XLA:TPU's estimate (fp32, forward).

  ``product``: the phases' product alone (its convolution, or a matrix product with one tap per phase), its
  input already padded, its kernel already laid out, no depth-to-space; ``final_copy``: the relayout to the
  caller's layout that ends Flax's own program, as it ends ours, since XLA:TPU writes a convolution's result
  batch-minor. Their sum over Flax's cycles estimates the best ratio of the phases' approach: not a strict
  bound, since the product's own cost depends on the layout XLA gives its result (8x128->64 32x32 k2 s2: 15k
  cycles here, 6k inside our program).
  """
  n = len(layer.spatial)
  flax_layer, channels_last = implementations(layer)["flax"]
  flax_kernels = _kernel_cycles(compile_program(flax_layer, layer, jnp.float32, channels_last, chip, peer=True))
  taps = _shapes.phase_kernel_size(layer.k, layer.s, layer.d)
  spec = "N" + "DHW"[-n:] + "C"

  def product(x, kernel):
    if taps == 1:
      return jnp.dot(x, kernel.reshape(kernel.shape[-2:]))
    return lax.conv_general_dilated(x, kernel, (1,) * n, "VALID", dimension_numbers=(spec, "DHW"[-n:] + "IO", spec))

  sharding = jax.sharding.SingleDeviceSharding(device(chip))
  x = jax.ShapeDtypeStruct((layer.batch, *(length + 2 * (taps - 1) for length in layer.spatial), layer.c_in),
                           jnp.float32, sharding=sharding)
  kernel = jax.ShapeDtypeStruct((taps,) * n + (layer.c_in, layer.s ** n * layer.c_out), jnp.float32,
                                sharding=sharding)
  product_kernels = _kernel_cycles(jax.jit(product).lower(x, kernel).compile())
  return {"flax": sum(c for _, c in flax_kernels), "final_copy": flax_kernels[-1][1] if flax_kernels[-1][0] == "copy" else 0,
          "product": sum(c for op, c in product_kernels if op != "copy")}


def analyze(layer: Layer, dtype_name: str, chip: str, names=None) -> list[dict]:
  """One row per implementation and pass of ``layer`` compiled for ``chip``."""
  rows = []
  for name, (fn, channels_last) in implementations(layer).items():
    if names is not None and name not in names:
      continue
    for pass_name, passes in (("forward", 1), ("train", 3)):
      start = time.perf_counter()
      compiled = compile_program(fn, layer, DTYPES[dtype_name], channels_last, chip, train=pass_name == "train",
                                 peer=name in PEERS)
      summary = (gpu_program if chip == "h100" else tpu_program)(compiled, layer, passes)
      rows.append({"chip": chip, "dtype": dtype_name, "implementation": name, "pass": pass_name, **summary,
                   "compile_s": round(time.perf_counter() - start, 2)})
  return rows


def describe(row: dict) -> str:
  if "cycles" in row:
    return f"{row['cycles'] / 1e3:,.0f}k cycles, {row['kernels']} kernels, flops {row['work']:.2f}x"
  counts = {kind: row["convolutions"].count(kind) for kind in dict.fromkeys(row["convolutions"])}
  calls = " + ".join(f"{v} {k}" if v > 1 else k for k, v in counts.items()) or "no cuDNN call"
  extra = (", zero-stuffed" if row["zero_stuffed"] else "") + (
      f", {row['unlowered_convolutions']} non-cuDNN conv" if row["unlowered_convolutions"] else "")
  return f"{calls}; {row['kernels']} kernels ({row['layout_kernels']} layout), work {row['work']:.2f}x{extra}"


def table(results: dict) -> str:
  """Markdown: one table per chip and dtype, a row per layer and implementation."""
  lines = []
  groups = {}
  for layer_name, rows in results["layers"].items():
    for row in rows:
      groups.setdefault((row["chip"], row["dtype"]), {}).setdefault(layer_name, {}).setdefault(
          row["implementation"], {})[row["pass"]] = row
  for (chip, dtype), layers in groups.items():
    lines += [f"\n## {chip}, {dtype}\n", "| layer | implementation | forward | training step |", "|---|---|---|---|"]
    for layer_name, implementations_ in layers.items():
      for name, passes in implementations_.items():
        lines.append(f"| {layer_name} | {name} | {describe(passes['forward'])} | {describe(passes['train'])} |")
  return "\n".join(lines) + "\n"


def tpu_summary(results: dict) -> str:
  """Markdown: ours (``auto``, both layouts) over Flax in estimated cycles, per TPU chip, for every layer Flax
  can express (no groups), and their geometric means over the layers with a stride above 1."""
  lines = []
  cycles = {}
  for layer_name, rows in results["layers"].items():
    layer = SUITE.get(layer_name)
    if layer is None or layer.group > 1:
      continue
    for row in rows:
      if "cycles" in row:
        cycles.setdefault(row["chip"], {}).setdefault(layer_name, {})[row["implementation"], row["pass"]] = row["cycles"]
  for chip, layers in cycles.items():
    names = [name for name in ("ours auto", "ours auto NHWC") if all((name, "train") in by for by in layers.values())]
    header = " | ".join(f"{pass_title} {'NHWC' if name.endswith('NHWC') else 'NCHW'}"
                        for pass_title in ("forward", "training step") for name in names)
    lines += [f"\n## {chip}: ours `auto` over Flax `nn.ConvTranspose` as its users write it, estimated cycles\n",
              f"| layer | {header} |", "|---|" + "---|" * 2 * len(names)]
    ratios = {}
    for layer_name, by in layers.items():
      cells = []
      for pass_name in ("forward", "train"):
        for name in names:
          if (name, pass_name) in by and ("flax", pass_name) in by:
            ratio = by[name, pass_name] / by["flax", pass_name]
            if SUITE[layer_name].s > 1:
              ratios.setdefault((name, pass_name), []).append(ratio)
            cells.append(f"{ratio:.2f}x ({by[name, pass_name] / 1e3:,.0f}k vs {by['flax', pass_name] / 1e3:,.0f}k)")
          else:
            cells.append("")
      lines.append(f"| {layer_name} | " + " | ".join(cells) + " |")
    means = [f"**{math.exp(sum(map(math.log, ratios[key])) / len(ratios[key])):.2f}x**" if ratios.get(key) else ""
             for key in [(name, pass_name) for pass_name in ("forward", "train")
                         for name in names]]
    lines.append("| geometric mean, stride >= 2 | " + " | ".join(means) + " |")
  for chip, layers in results.get("copy_free", {}).items():
    lines += [f"\n## {chip}: a copy-free phase formulation (`copy_free_phase`), forward, estimated cycles\n",
              "| layer | Flax | its final relayout | the phases' product alone | product + relayout over Flax |",
              "|---|---|---|---|---|"]
    ratios = []
    for layer_name, estimate in layers.items():
      ratios.append((estimate["product"] + estimate["final_copy"]) / estimate["flax"])
      lines.append(f"| {layer_name} | {estimate['flax'] / 1e3:,.0f}k | {estimate['final_copy'] / 1e3:,.0f}k | "
                   f"{estimate['product'] / 1e3:,.0f}k | {ratios[-1]:.2f}x |")
    lines.append(f"| geometric mean | | | | **{math.exp(sum(map(math.log, ratios)) / len(ratios)):.2f}x** |")
  return "\n".join(lines) + "\n"


def write(results: dict, out: Path) -> None:
  out.parent.mkdir(parents=True, exist_ok=True)
  out.write_text(json.dumps(results, indent=1))
  out.with_suffix(".md").write_text(tpu_summary(results) + table(results))


def main():
  parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
  parser.add_argument("--chips", nargs="+", default=["h100", "v5e", "v6e"])
  parser.add_argument("--dtypes", nargs="+", default=["fp32", "bf16"], choices=list(DTYPES))
  parser.add_argument("--tpu-dtypes", nargs="+", default=["fp32"], choices=list(DTYPES),
                      help="dtypes on TPU (a training-step compile there takes 15-150 s)")
  parser.add_argument("--layers", nargs="+", default=list(SUITE), choices=list(SUITE))
  parser.add_argument("--tpu-implementations", nargs="+",
                      default=["ours auto", "ours auto NHWC", "ours dilated", "ours phase", "flax"])
  parser.add_argument("--gpu-implementations", nargs="+", help="on the H100 (default: every implementation)")
  parser.add_argument("--copy-free", action="store_true",
                      help="only `copy_free_phase` of the strided layers on the TPU chips")
  parser.add_argument("--out", default=str(HERE / "results" / "accelerator-programs.json"))
  args = parser.parse_args()
  results = {"jax": jax.__version__, "layers": {}, "useful_macs": {}}
  out = Path(args.out)
  if out.exists():  # keep what an earlier run measured for other chips or layers
    results = json.loads(out.read_text())
  if args.copy_free:
    for chip in (chip for chip in args.chips if chip != "h100"):
      for layer_name in args.layers:
        if SUITE[layer_name].s > 1 and SUITE[layer_name].group == 1:
          estimate = copy_free_phase(SUITE[layer_name], chip)
          results.setdefault("copy_free", {}).setdefault(chip, {})[layer_name] = estimate
          print(chip, layer_name, estimate, flush=True)
    write(results, out)
  for layer_name in [] if args.copy_free else args.layers:
    layer = SUITE[layer_name]
    results["useful_macs"][layer_name] = layer.useful_macs
    rows = [r for r in results["layers"].get(layer_name, []) if r["chip"] not in args.chips]
    for chip in args.chips:
      tpu = chip != "h100"
      for dtype_name in args.tpu_dtypes if tpu else args.dtypes:
        new = analyze(layer, dtype_name, chip, args.tpu_implementations if tpu else args.gpu_implementations)
        for row in new:
          print(f"{chip} {dtype_name} {layer_name} | {row['implementation']} {row['pass']}: {describe(row)}",
                flush=True)
        rows += new
    results["layers"][layer_name] = rows
    write(results, out)
  print(tpu_summary(results))
  print(f"wrote {out} and {out.with_suffix('.md')}", file=sys.stderr)


if __name__ == "__main__":
  main()
