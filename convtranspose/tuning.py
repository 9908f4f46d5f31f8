"""Which algorithm ``algorithm='auto'`` takes, measured on the user's chip: tuning tables and `autotune`.

Every algorithm computes the same layer (`convtranspose.conv_transpose`); which is fastest depends on the chip,
the layer and the dtype. A `Tuning` holds, for one device (its `jax.Device.device_kind`, and for CPUs the
processor model, since one kind string covers every x86 machine), each layer's measured median times of every
candidate for the forward pass and for the training step (`jax.value_and_grad` of a loss of the output with
respect to input and weight). The value nobody differentiates takes the fastest forward pass, a differentiated
call the fastest training step (`convtranspose._hybrid.Chosen`): the two may differ.

``algorithm='auto'`` looks a layer up, when its program is traced, in this order:

1. the tunings active in a ``with tuning:`` block, innermost first;
2. the process's tuning (`use_tuning`, or a file named by the environment variable ``CONVTRANSPOSE_TUNING``);
3. the layers tuned at trace time in this process (``algorithm='autotune'``, or every ``'auto'`` layer after
   `tune_on_miss`);
4. the tables shipped in the package for this device (``convtranspose/tables/``);
5. the rule (`convtranspose.functional._choose_algorithm`), which also serves unknown devices, exports for a
   platform this process has no device of, and symbolic shapes.

A layer is looked up by its full signature (`LayerCall.signature`): rank, input shape (the per-device block under a mesh
with `Explicit` axes; the global shape on an `Auto` mesh, where the trace cannot know the partitioning; the
local block under `jax.shard_map`), channels, group, kernel, stride, dilation, padding, ``output_padding``,
layout, dtype, ``padding_mode`` and precision. A table for another device, format or JAX version, or a file
that cannot be read, warns once and is skipped: a lookup never raises. The choice is made when a function is
traced, so a function jitted before a tuning was activated keeps its program until traced again.

>>> import convtranspose as ct
>>> tuning = ct.autotune(lambda x, w: ct.conv_transpose(x, w, stride=2), jnp.ones((1, 4, 8, 8)),
...                      jnp.ones((4, 2, 3, 3)), repeats=1, progress=False)
>>> [(layer.value in FORWARD_CANDIDATES, layer.trained in TRAINING_CANDIDATES) for layer in tuning]
[(True, True)]
>>> with tuning:  # or ct.use_tuning(tuning), or tuning.save(path) and CONVTRANSPOSE_TUNING=path
...   y = ct.conv_transpose(jnp.ones((1, 4, 8, 8)), jnp.ones((4, 2, 3, 3)), stride=2)
"""

import contextvars
import dataclasses
import functools
import json
import math
import os
import platform as platform_module
import re
import statistics
import sys
import time
import warnings
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from convtranspose import _arguments, _hybrid

FORMAT = "convtranspose-tuning"
FORMAT_VERSION = 1
ENVIRONMENT_VARIABLE = "CONVTRANSPOSE_TUNING"
# What a tuning times: the value's algorithms (on CPU `hybrid`'s value is one of these) and the training
# step's (`hybrid` pairs one formulation's value with the other's derivatives).
FORWARD_CANDIDATES = ("dilated", "phase")
TRAINING_CANDIDATES = ("dilated", "phase", "hybrid")
_TABLES = Path(__file__).resolve().parent / "tables"


@dataclasses.dataclass(frozen=True)
class LayerCall:
  """One transposed convolution as a program sees it: everything its algorithm may depend on.

  Attributes:
    geometry: the canonical window (`convtranspose._arguments.Geometry`: kernel, stride, dilation, padding,
      group, layout, ``output_padding``, ``padding_mode``).
    input_shape: the batched input's shape, in the layer's layout.
    weight_shape: MindSpore's ``(C_in, C_out // group, *kernel)``.
    dtype: the dtype it computes in.
    precision: as `jax.lax.conv_general_dilated` takes it.
  """

  geometry: _arguments.Geometry
  input_shape: tuple[int, ...]
  weight_shape: tuple[int, ...]
  dtype: str
  precision: Any = None

  @property
  def signature(self) -> str:
    """The key of this layer in a `Tuning`: one line a reader can parse, e.g. ``2-D NCHW float32 x=(8, 64, 32,
    32) w=(64, 32, 4, 4) stride=(2, 2) dilation=(1, 1) padding=((1, 1), (1, 1)) output_padding=(0, 0) group=1
    zeros precision=default``."""
    g = self.geometry
    n = len(g.kernel_size)
    layout = _arguments.DATA_FORMATS[n][g.channels_last] if n in _arguments.DATA_FORMATS else (
        "channels-last" if g.channels_last else "channels-first")
    return (f"{n}-D {layout} {self.dtype} x={self.input_shape} w={self.weight_shape} stride={g.stride} "
            f"dilation={g.dilation} padding={g.padding} output_padding={g.output_padding or (0,) * n} "
            f"group={g.group} {g.padding_mode} precision={_precision_name(self.precision)}")


def _precision_name(precision: Any) -> str:
  """``'default'``, or the precision's name(s) (``'HIGHEST'``, ``'HIGH,DEFAULT'``)."""
  if precision is None:
    return "default"
  parts = precision if isinstance(precision, (tuple, list)) else (precision,)
  return ",".join(getattr(p, "name", str(p).upper()) for p in parts)


@dataclasses.dataclass(frozen=True)
class Measured:
  """One layer's median times (seconds, or estimated cycles in a table of estimates) per candidate.

  Attributes:
    signature: the layer (`LayerCall.signature`).
    forward: ``{algorithm: time}`` of the forward pass.
    training: ``{algorithm: time}`` of the training step.
  """

  signature: str
  forward: dict[str, float]
  training: dict[str, float]

  @property
  def value(self) -> str:
    """The algorithm of the undifferentiated value: the fastest forward pass (the first listed on a tie)."""
    return min(self.forward, key=self.forward.__getitem__)

  @property
  def trained(self) -> str:
    """The algorithm of the training step: the fastest."""
    return min(self.training, key=self.training.__getitem__)

  @property
  def chosen(self) -> _hybrid.Chosen:
    return _hybrid.Chosen(self.value, self.trained)


class Tuning:
  """Measured choices of algorithm for one device: printable, savable, and active in a ``with`` block.

  Attributes:
    device_kind: `jax.Device.device_kind` of the device measured (``'cpu'``, ``'TPU v6 lite'``, ...).
    processor: for a CPU, its model and matrix extensions (`processor`); None elsewhere.
    layers: ``{signature: Measured}``.
    unit: ``'s'`` for measured times, ``'cycles'`` for a compiler's estimates.
    versions: the ``jax`` and ``jaxlib`` versions measured with.
    source: how it was made (free text).

  >>> tuning = Tuning('cpu', 'some CPU')
  >>> print(tuning)
  Tuning for cpu (some CPU): no layers.
  """

  def __init__(self, device_kind: str, processor: str | None = None, layers: dict[str, Measured] | None = None, *,
               unit: str = "s", versions: dict[str, str] | None = None, source: str = ""):
    self.device_kind = device_kind
    self.processor = processor
    self.layers = dict(layers or {})
    self.unit = unit
    self.versions = dict(versions or _versions())
    self.source = source
    self._tokens: list[contextvars.Token] = []

  @property
  def device(self) -> tuple[str, str | None]:
    return self.device_kind, self.processor

  def __len__(self) -> int:
    return len(self.layers)

  def __iter__(self) -> Iterator[Measured]:
    return iter(self.layers.values())

  def __contains__(self, signature: str) -> bool:
    return signature in self.layers

  def update(self, other: "Tuning") -> None:
    """Adds ``other``'s layers (measured on the same device), replacing those of the same signature."""
    if other.device != self.device:
      raise ValueError(f"Cannot merge a tuning for {_device_name(other.device)} into one for "
                       f"{_device_name(self.device)}.")
    self.layers.update(other.layers)

  def __enter__(self) -> "Tuning":
    self._tokens.append(_ACTIVE.set((*_ACTIVE.get(), self)))
    return self

  def __exit__(self, *exc_info) -> None:
    _ACTIVE.reset(self._tokens.pop())

  def __str__(self) -> str:
    head = f"Tuning for {_device_name(self.device)}"
    if not self.layers:
      return f"{head}: no layers."
    scale, unit = (1e3, "ms") if self.unit == "s" else (1e-3, "k cycles")
    lines = [f"{head}, {len(self.layers)} layers, median {unit} (forward | training step), * = chosen:"]
    for measured in self.layers.values():
      forward = "  ".join(f"{name} {t * scale:.3g}{'*' if name == measured.value else ''}"
                          for name, t in measured.forward.items())
      training = "  ".join(f"{name} {t * scale:.3g}{'*' if name == measured.trained else ''}"
                           for name, t in measured.training.items())
      lines.append(f"  {measured.signature}\n    {forward} | {training}")
    return "\n".join(lines)

  def __repr__(self) -> str:
    return f"Tuning({self.device_kind!r}, {self.processor!r}, <{len(self.layers)} layers>, unit={self.unit!r})"

  def to_json(self) -> dict:
    return dict(format=FORMAT, version=FORMAT_VERSION, device_kind=self.device_kind, processor=self.processor,
                unit=self.unit, source=self.source, **self.versions,
                layers=[dict(signature=m.signature, forward=m.forward, training=m.training, value=m.value,
                             trained=m.trained) for m in self.layers.values()])

  def save(self, path: str | os.PathLike) -> None:
    """Writes the tuning as JSON (format version, jax and jaxlib versions, device kind and processor)."""
    Path(path).write_text(json.dumps(self.to_json(), indent=1) + "\n")

  @classmethod
  def load(cls, path: str | os.PathLike) -> "Tuning":
    """Reads a file `save` wrote.

    Raises:
      OSError: the file cannot be read.
      ValueError: it is not a tuning file of this format version (or is truncated), naming the file.
    """
    text = Path(path).read_text()
    try:
      data = json.loads(text)
      if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise ValueError(f"it is not a convtranspose tuning (no \"format\": {FORMAT!r})")
      if data.get("version") != FORMAT_VERSION:
        raise ValueError(f"its format version is {data.get('version')!r}, this convtranspose reads "
                         f"{FORMAT_VERSION}")
      layers = {}
      for row in data["layers"]:
        measured = Measured(str(row["signature"]), _times(row["forward"]), _times(row["training"]))
        layers[measured.signature] = measured
      return cls(str(data["device_kind"]), data["processor"], layers, unit=str(data["unit"]),
                 versions={name: str(data[name]) for name in ("jax", "jaxlib")}, source=str(data.get("source", "")))
    except (ValueError, KeyError, TypeError) as error:
      raise ValueError(f"{path} is not a readable convtranspose tuning file: {error}") from None


def _times(row: Any) -> dict[str, float]:
  known = set(_hybrid.FORMULATIONS)
  if not isinstance(row, dict) or not row or not set(row) <= known:
    raise ValueError(f"times must map algorithms among {sorted(known)} to numbers, got {row!r}")
  return {name: float(t) for name, t in row.items()}


def _versions() -> dict[str, str]:
  import jaxlib
  return {"jax": jax.__version__, "jaxlib": jaxlib.__version__}


def _device_name(device: tuple[str, str | None]) -> str:
  kind, processor = device
  return f"{kind} ({processor})" if processor else kind


@functools.cache
def processor() -> str:
  """The CPU's model name and matrix extensions (``/proc/cpuinfo`` on Linux; ``platform.processor()``
  elsewhere): AMX tiles or AVX-512 change which algorithm is fastest."""
  try:
    info = Path("/proc/cpuinfo").read_text()
  except OSError:
    return platform_module.processor() or platform_module.machine()
  lines = info.splitlines()
  name = next((line.split(":", 1)[1].strip() for line in lines if line.startswith("model name")), "")
  flags = set(next((line.split(":", 1)[1].split() for line in lines if line.startswith("flags")), []))
  extensions = ", ".join(sorted(flags & {"avx512f", "avx512_bf16", "amx_bf16", "amx_tile"})) or "no AVX-512"
  return f"{name or platform_module.machine()} ({extensions})"


@functools.cache
def device_of(platform: str) -> tuple[str, str | None] | None:
  """``(device_kind, processor)`` of this process's first device of ``platform`` (``'cpu'``, ``'gpu'``,
  ``'tpu'``), or None if it has none (an export for another platform)."""
  try:
    kind = jax.devices(platform)[0].device_kind
  except Exception:  # no backend of that platform here (RuntimeError); never a reason to fail a trace
    return None
  return kind, processor() if platform == "cpu" else None


_ACTIVE: contextvars.ContextVar[tuple[Tuning, ...]] = contextvars.ContextVar("convtranspose_tuning", default=())


@dataclasses.dataclass
class _ProcessState:
  user: Tuning | None = None  # `use_tuning`
  user_chosen: bool = False  # whether `use_tuning` was called (then the environment variable is not read)
  environment: dict = dataclasses.field(default_factory=dict)  # file named by the variable -> Tuning or None
  tuned: dict = dataclasses.field(default_factory=dict)  # device -> Tuning of the layers tuned at trace time
  tune_on_miss: bool = False
  warned: set = dataclasses.field(default_factory=set)


_STATE = _ProcessState()


def use_tuning(tuning: "Tuning | str | os.PathLike | None") -> None:
  """Makes ``tuning`` (a `Tuning`, or a file `Tuning.save` wrote) the process's, after the active ones in
  the lookup order, in place of the file the environment variable ``CONVTRANSPOSE_TUNING`` names (read the
  same way at the first lookup); None forgets it. A file that cannot be read warns and leaves none."""
  _STATE.user_chosen = tuning is not None
  _STATE.user = tuning if tuning is None or isinstance(tuning, Tuning) else _read(tuning)


def tune_on_miss(enabled: bool = True) -> bool:
  """Switches trace-time tuning on (off by default, so that compiling stays deterministic): every
  ``algorithm='auto'`` layer no tuning knows is measured on this process's device when traced, and remembered
  for the process. Returns the previous setting."""
  previous, _STATE.tune_on_miss = _STATE.tune_on_miss, bool(enabled)
  return previous


def _warn_once(message: str) -> None:
  if message not in _STATE.warned:
    _STATE.warned.add(message)
    warnings.warn(message, RuntimeWarning, stacklevel=3)


def _read(path: str | os.PathLike) -> Tuning | None:
  try:
    return Tuning.load(path)
  except (OSError, ValueError) as error:
    _warn_once(f"convtranspose: tuning file skipped, algorithm='auto' falls back to its rule: {error}")
    return None


@functools.cache
def _shipped() -> dict[tuple[str, str | None], Tuning]:
  tables = {}
  for path in sorted(_TABLES.glob("*.json")):
    tuning = _read(path)
    if tuning is not None:
      tables[tuning.device] = tuning
  return tables


def _usable(tuning: Tuning, device: tuple[str, str | None], shipped: bool = False) -> bool:
  """Whether ``tuning`` was measured on ``device`` (and, unless shipped with the package, with this jax)."""
  if tuning.device != device:
    _warn_once(f"convtranspose: a tuning for {_device_name(tuning.device)} is skipped on "
               f"{_device_name(device)}; algorithm='auto' uses the next table or its rule.")
    return False
  if not shipped and tuning.versions != _versions():
    _warn_once(f"convtranspose: a tuning measured with {tuning.versions} is skipped under {_versions()} (stale); "
               "tune again with convtranspose.autotune.")
    return False
  return True


def _user_tuning() -> Tuning | None:
  """`use_tuning`'s, else the file ``CONVTRANSPOSE_TUNING`` names (read once per file name)."""
  if _STATE.user_chosen:
    return _STATE.user
  path = os.environ.get(ENVIRONMENT_VARIABLE)
  if not path:
    return None
  if path not in _STATE.environment:
    _STATE.environment[path] = _read(path)
  return _STATE.environment[path]


def choice(call: LayerCall, platform: str, tune: bool = False) -> _hybrid.Chosen | None:
  """The measured choice for ``call`` compiled for ``platform``, in the lookup order of this module, or None
  (the rule's turn). With ``tune`` (or `tune_on_miss`), a layer no table knows is measured now when
  ``platform`` is this process's default device, and remembered."""
  device = device_of(platform)
  if device is None:
    return None
  signature = call.signature
  tunings = [*reversed(_ACTIVE.get()), _user_tuning(), _STATE.tuned.get(device)]
  for tuning in tunings:
    if tuning is not None and signature in tuning and _usable(tuning, device):
      return tuning.layers[signature].chosen
  shipped = _shipped().get(device)
  if shipped is not None and signature in shipped and _usable(shipped, device, shipped=True):
    return shipped.layers[signature].chosen
  if (tune or _STATE.tune_on_miss) and jax.default_backend() == platform:
    with jax.ensure_compile_time_eval():
      measured = measure(call)
    _STATE.tuned.setdefault(device, Tuning(*device, source="tuned at trace time")).layers[signature] = measured
    return measured.chosen
  return None


# The layers `autotune` records while it traces; None when not recording.
_RECORDING: contextvars.ContextVar[list | None] = contextvars.ContextVar("convtranspose_recording", default=None)


def record(call: LayerCall) -> None:
  """Notes ``call`` for `autotune` when it is tracing (`convtranspose.functional` calls it per layer)."""
  recording = _RECORDING.get()
  if recording is not None and call not in recording:
    recording.append(call)


def layers_of(fn: Callable, *args: Any, **kwargs: Any) -> list[LayerCall]:
  """Every distinct ``algorithm='auto'`` (or ``'autotune'``) transposed convolution ``fn(*args, **kwargs)``
  calls, in order, found by tracing it (jitted functions inside it included; nothing is computed)."""
  # The arrays (and `jax.ShapeDtypeStruct`s) among the arguments are traced, the rest (static arguments, module
  # definitions) closed over; NNX modules are pytrees of their variables, so a module is traced as a copy.
  leaves, tree = jax.tree.flatten((args, kwargs))
  traced = [i for i, leaf in enumerate(leaves) if isinstance(leaf, (jax.Array, np.ndarray, jax.ShapeDtypeStruct))]

  def call(*values):
    filled = list(leaves)
    for i, value in zip(traced, values):
      filled[i] = value
    args, kwargs = jax.tree.unflatten(tree, filled)
    return fn(*args, **kwargs)

  token = _RECORDING.set([])
  try:
    with jax.disable_jit():  # a jitted function traced before would not be traced again
      jax.make_jaxpr(call)(*(jax.ShapeDtypeStruct(np.shape(leaves[i]), leaves[i].dtype,
                                                  sharding=getattr(leaves[i], "sharding", None)) for i in traced))
    return _RECORDING.get()
  finally:
    _RECORDING.reset(token)


def autotune(fn: Callable, *args: Any, repeats: int = 5, progress: bool = True,
             clock: Callable[[], float] = time.perf_counter, **kwargs: Any) -> Tuning:
  """Measures every algorithm of every transposed convolution ``fn(*args, **kwargs)`` calls.

  ``fn`` may be any function: a jitted step, a Flax linen ``apply`` or an NNX module's call, with the
  arguments it takes. Each layer it calls with ``algorithm='auto'`` is timed on the default device, with random
  operands of the shapes it is traced with: the forward pass of each of `FORWARD_CANDIDATES` and the training
  step (`jax.value_and_grad` of the mean squared error to a random target, with respect to input and weight) of
  each of `TRAINING_CANDIDATES`, median of ``repeats`` calls after a warm-up, compilation excluded.

  Args:
    fn: the function to tune.
    *args: its arguments (arrays, or anything `jax.make_jaxpr` traces through).
    repeats: timed calls per candidate at least (more, up to 20x, until they add up to 50 ms), in rounds
      (`median_times`); a candidate whose first call takes over 4x the fastest's is timed once.
    progress: print one line per layer to stderr.
    clock: seconds, for timing (`time.perf_counter`).
    **kwargs: its keyword arguments.

  Returns:
    A `Tuning` of this device: print it for the table, ``with tuning:`` or `use_tuning` to use it, `Tuning.save`
    to keep it. Empty (and saying so) if ``fn`` calls no transposed convolution.
  """
  device = device_of(jax.default_backend()) or (jax.devices()[0].device_kind, None)
  tuning = Tuning(*device, source="convtranspose.autotune")
  calls = layers_of(fn, *args, **kwargs)
  if not calls:
    if progress:
      print("convtranspose.autotune: the function calls no transposed convolution with algorithm='auto'.",
            file=sys.stderr)
    return tuning
  for index, call in enumerate(calls):
    measured = measure(call, repeats, clock)
    tuning.layers[measured.signature] = measured
    if progress:
      print(f"convtranspose.autotune [{index + 1}/{len(calls)}] {call.signature}: forward {measured.value}, "
            f"training step {measured.trained}", file=sys.stderr, flush=True)
  return tuning


def measure(call: LayerCall, repeats: int = 5, clock: Callable[[], float] = time.perf_counter) -> Measured:
  """The median times of every candidate for ``call`` on the default device (`autotune`)."""
  programs, operands = candidate_programs(call), step_operands(call)
  times = {train: median_times(programs[train], operands[train], repeats, clock) for train in (False, True)}
  return Measured(call.signature, times[False], times[True])


def candidate_programs(call: LayerCall) -> dict[bool, dict[str, Callable]]:
  """``{train: {algorithm: compiled}}``: each of `FORWARD_CANDIDATES` (``train=False``) and of
  `TRAINING_CANDIDATES` (``train=True``) compiled by `program`."""
  return {train: {name: program(call, name, train) for name in candidates}
          for train, candidates in ((False, FORWARD_CANDIDATES), (True, TRAINING_CANDIDATES))}


def program(call: LayerCall, algorithm: str, train: bool) -> Callable:
  """``call``'s layer with ``algorithm``, or its training step, compiled for the default device."""
  from convtranspose.functional import _conv_transpose

  def layer(x, weight):
    return _conv_transpose(x, weight, None, call.geometry, call.precision, algorithm)

  def training_step(x, weight, target):
    def loss(x, weight):
      return jnp.mean((layer(x, weight).astype(jnp.float32) - target) ** 2)
    return jax.value_and_grad(loss, argnums=(0, 1))(x, weight)

  fn = training_step if train else layer
  operands = [jax.ShapeDtypeStruct(call.input_shape, call.dtype), jax.ShapeDtypeStruct(call.weight_shape, call.dtype)]
  if train:
    out = jax.eval_shape(layer, *operands)
    operands.append(jax.ShapeDtypeStruct(out.shape, jnp.float32))
  return jax.jit(fn).lower(*operands).compile()


def step_operands(call: LayerCall) -> dict[bool, tuple[jax.Array, ...]]:
  """Seeded random operands of ``call``'s shapes: ``{False: (x, weight), True: (x, weight, target)}``, the
  forward pass's and the training step's (the target in float32, the output's shape)."""
  from convtranspose.functional import _conv_transpose
  rng = np.random.default_rng(0)
  x = jnp.asarray(rng.standard_normal(call.input_shape, np.float32), call.dtype)
  weight = jnp.asarray(rng.standard_normal(call.weight_shape, np.float32) / math.sqrt(math.prod(call.weight_shape[:1])),
                       call.dtype)
  out = jax.eval_shape(lambda x, w: _conv_transpose(x, w, None, call.geometry, call.precision, "dilated"), x, weight)
  return {False: (x, weight), True: (x, weight, jnp.asarray(rng.standard_normal(out.shape, np.float32)))}


def median_times(programs: dict[str, Callable], operands: tuple, repeats: int = 5,
                 clock: Callable[[], float] = time.perf_counter) -> dict[str, float]:
  """``{name: median seconds}`` of ``programs`` called on ``operands``, in rounds that call each once, so that a
  drifting machine (another process, the allocator's state) weighs on all alike.

  Programs XLA compiled to the same code (on CPU, `hybrid`'s training step is the phases' at a stride) are timed
  once, and share that time. Each is called once to warm up, then timed at least ``repeats`` times and more (up
  to 20x) until its calls add up to 50 ms; one whose first timed call took over 4x the fastest first call is
  timed once.
  """
  distinct: dict[Any, str] = {}  # program text -> the first name that has it
  for name, compiled in programs.items():
    distinct.setdefault(_program_text(compiled), name)
  timed = {name: programs[name] for name in distinct.values()}
  for compiled in timed.values():
    jax.block_until_ready(compiled(*operands))
  repeats = max(repeats, 1)
  times: dict[str, list[float]] = {name: [] for name in timed}
  running = list(timed)
  while running:
    for name in running:
      start = clock()
      jax.block_until_ready(timed[name](*operands))
      times[name].append(clock() - start)
    fastest = min(t[0] for t in times.values())
    running = [name for name in running if times[name][0] <= 4 * fastest and (
        len(times[name]) < repeats or (sum(times[name]) < 0.05 and len(times[name]) < 20 * repeats))]
  return {name: statistics.median(times[distinct[_program_text(compiled)]]) for name, compiled in programs.items()}


def _program_text(compiled: Any) -> Any:
  """What identifies a compiled program's code: its HLO without names and source locations (or the object
  itself, for anything that is not a compiled JAX program)."""
  if not hasattr(compiled, "as_text"):
    return compiled
  text = re.sub(r", metadata=\{[^}]*\}", "", compiled.as_text())
  start = re.search(r"^(ENTRY |%)", text, re.MULTILINE)  # past the module's name and its source locations
  text = text[start.start():] if start else text
  names: dict[str, str] = {}  # instructions and computations renamed in order of appearance
  return re.sub(r"%[\w.-]+|\bparam_[\d.]+", lambda m: names.setdefault(m.group(0), f"%{len(names)}"), text)
