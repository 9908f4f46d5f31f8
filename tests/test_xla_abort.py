"""No configuration may abort the interpreter: XLA's operand-swap CHECK failure, probed in subprocesses.

XLA's algebraic simplifier dies ("Window dimensions do not match RHS shape") on some valid lhs-dilated
convolutions (see `convtranspose._dilated.operand_swap_guard`). An abort cannot be caught in-process,
so every probe runs in a child Python: an abort is a failed test naming the configuration, not a dead run.
"""

import os
import pathlib
import signal
import subprocess
import sys

import jaxlib
import numpy as np
import pytest
import torch
import xla_abort_probe

import convtranspose as ct

PROBE = pathlib.Path(__file__).resolve().parent / "xla_abort_probe.py"
ROOT = PROBE.parent.parent
NUM_CHUNKS = 4  # per platform: the two test workers share eight
BATCH = 64  # configurations per XLA program
SWEEP = list(xla_abort_probe.configurations())
# Versions on which the unguarded formulation was seen to abort (CPU; 0.11.2 on GPU too).
KNOWN_AFFECTED_JAXLIB = {"0.10.2", "0.11.2"}
# Unguarded, this configuration aborts in the weight gradient: k=4, s=2, padding 3 gives out == stride.
WEIGHT_GRADIENT_CASE = ("pad", ((3, 4, 2, 1, (3, 3)), (1, 4, 1, 1, (1, 0))), 1, 1)
# Unguarded, this one aborts in the forward pass: k == s == 2, padding 1 leaves the dilated conv unpadded.
FORWARD_CASE = ("pad", ((3, 2, 2, 1, (1, 1)), (1, 4, 1, 1, (1, 0))), 1, 1)
# Unguarded, this one aborts too: output_padding 1 with padding (1, 2) leaves k == s == 2 unpadded, channels-last.
OUTPUT_PADDING_CASE = ("pad", ((3, 2, 2, 1, (1, 2)), (1, 4, 1, 1, (1, 0))), 1, 1, (1, 0), "NHWC")


# The abort is in XLA's HLO passes, before code generation. Without LLVM's optimizations and with XLA's older
# fusion emitter a probe compiles in about a third of the time, and XLA's optimized convolutions are the same
# (`test_the_probes_shortcuts_leave_xlas_convolutions_as_they_are`); `test_the_guard_is_what_prevents_the_abort`
# shows the unguarded abort under these flags too.
CODEGEN_FLAGS = "--xla_backend_optimization_level=0 --xla_cpu_use_fusion_emitters=false"
PROBE_ENV = {**os.environ, "XLA_FLAGS": f"{os.environ.get('XLA_FLAGS', '')} {CODEGEN_FLAGS}"}


def run_python(*args: str, env: dict | None = None) -> subprocess.CompletedProcess:
  return subprocess.run([sys.executable, *args], capture_output=True, text=True, cwd=ROOT, timeout=1200, env=env)


def run_probe(*args: str, env: dict = PROBE_ENV) -> subprocess.CompletedProcess:
  return run_python(str(PROBE), *args, env=env)


def describe(result: subprocess.CompletedProcess) -> str:
  started = [line for line in result.stdout.splitlines() if line.startswith(("config", "batch"))]
  last = started[-1] if started else "(none started)"
  return f"exit code {result.returncode}; last started: {last}\n{result.stderr[-2000:]}"


def listed(result: subprocess.CompletedProcess, word: str) -> list[list[int]]:
  """The sweep indices of each ``word I,J,...`` line the probe printed."""
  return [[int(i) for i in line.split(" ", 1)[1].split(",") if i] for line in result.stdout.splitlines()
          if line.startswith(word + " ")]


def sweep(indices: list[int], *options: str, batch: int = BATCH) -> dict[int, str]:
  """Compiles (and runs) every configuration of ``indices``, ``batch`` to a program; returns what each one that
  failed did. A batch that aborts is compiled again one configuration at a time, and the rest after it go on."""
  failures, pending = {}, list(indices)
  while pending:
    result = run_probe("--indices", ",".join(map(str, pending)), "--batch", str(batch), *options)
    settled = {i for line in listed(result, "ok") + listed(result, "rejected") for i in line}
    started = listed(result, "batch")
    if result.returncode == 0 or not started:  # done, or failed before compiling anything
      failures.update({i: describe(result) for i in pending if i not in settled})
      break
    if len(started[-1]) == 1:
      failures[started[-1][0]] = describe(result)
    else:
      failures.update(sweep(started[-1], *options, batch=1))
    pending = [i for i in pending if i not in settled and i not in started[-1]]
  return failures


def test_an_abort_is_reported_not_fatal():
  result = run_python("-c", "import os; print('config (about to abort)', flush=True); os.abort()")
  assert result.returncode == -signal.SIGABRT
  assert "about to abort" in describe(result)


def test_an_aborting_batch_gets_one_verdict_per_configuration():
  """Unguarded, the sweep's aborting configurations among a sample, and only they, are named, each by its own
  abort: the batch that aborted is compiled again one configuration at a time, and the sweep goes on."""
  if jaxlib.__version__ not in KNOWN_AFFECTED_JAXLIB:
    pytest.skip(f"the unguarded abort was observed on jaxlib {sorted(KNOWN_AFFECTED_JAXLIB)}, this is "
                f"{jaxlib.__version__}")
  known = [SWEEP.index(FORWARD_CASE), SWEEP.index(WEIGHT_GRADIENT_CASE)]
  failures = sweep(sorted({*known, *range(0, len(SWEEP), 300)}), "--unguarded")
  assert set(known) <= set(failures), failures
  for i, text in failures.items():
    assert text.startswith(f"exit code {-signal.SIGABRT}; last started: batch {i}\n"), text


@pytest.mark.exhaustive
@pytest.mark.parametrize("platform", ["cpu", "gpu"])
@pytest.mark.parametrize("chunk", range(NUM_CHUNKS))
def test_small_configurations_never_abort(chunk, platform):
  """Input 1-3, kernel 1-5, stride 1-3, dilation 1-2, every pad mode, groups, output_padding channels-last:
  forward and both gradients; for the GPU's formulation (the forward convolution's adjoint, computed here on
  the CPU, whose XLA shares the simplifier) the forward-mode derivative too. One verdict per configuration."""
  indices = [i for i in range(chunk, len(SWEEP), NUM_CHUNKS)
             if platform == "cpu" or any(dim[2] > 1 for dim in SWEEP[i][1])]
  failures = sweep(indices, "--platform", platform)
  assert not failures, "\n\n".join(f"configuration {i} {SWEEP[i]}: {text}" for i, text in failures.items())


@pytest.mark.exhaustive
@pytest.mark.parametrize("platform", ["cpu", "gpu"])
def test_the_probes_shortcuts_leave_xlas_convolutions_as_they_are(platform):
  """On a sample of the sweep, XLA's optimized convolutions are the same whether each configuration is compiled
  alone, with XLA's default flags and (on the CPU) every platform's branch traced, as users compile it, or as
  the sweep compiles it: one platform traced, BATCH configurations to a program, CODEGEN_FLAGS."""
  sample = ",".join(str(i) for i in range(0, len(SWEEP), 97))
  exact = ["--exact"] if platform == "cpu" else []
  alone = run_probe("--indices", sample, "--platform", platform, "--convolutions", *exact, env=dict(os.environ))
  batched = run_probe("--indices", sample, "--platform", platform, "--convolutions", "--batch", str(BATCH))
  for result in alone, batched:
    assert result.returncode == 0, describe(result)
  convolutions = [{line for line in result.stdout.splitlines() if line.startswith("convolution ")}
                  for result in (alone, batched)]
  assert len(convolutions[0]) > 20
  assert convolutions[0] == convolutions[1]


@pytest.mark.parametrize("config", [FORWARD_CASE, WEIGHT_GRADIENT_CASE, OUTPUT_PADDING_CASE],
                         ids=["forward", "weight-gradient", "output-padding-channels-last"])
def test_the_guard_is_what_prevents_the_abort(config):
  guarded = run_probe("--config", repr(config))
  assert guarded.returncode == 0, describe(guarded)
  if jaxlib.__version__ not in KNOWN_AFFECTED_JAXLIB:
    pytest.skip(f"the unguarded abort was observed on jaxlib {sorted(KNOWN_AFFECTED_JAXLIB)}, this is "
                f"{jaxlib.__version__}: only the guarded half of this test applies")
  unguarded = run_probe("--config", repr(config), "--unguarded")
  assert unguarded.returncode == -signal.SIGABRT, describe(unguarded)


ISSUE_EXAMPLES = {
    # jax.lax.conv_general_dilated(ones(1, 2, 1, 8), ones(1, 2, 2, 2), (1, 1), ((1, 0), (0, 0)), lhs_dilation=(1, 2))
    # aborts; the same transposed convolution in our terms (conv padding dk - 1 - pad):
    "lax": dict(x=(1, 2, 1, 8), weight=(2, 1, 2, 2), stride=(1, 2), padding=(0, 1, 1, 1)),
    # flax nn.ConvTranspose(1, (5, 2), strides=(2, 2), padding=((3, 3), (0, 0))) on (1, 2, 13, 1) NHWC aborts:
    "flax": dict(x=(1, 1, 2, 13), weight=(1, 1, 5, 2), stride=(2, 2), padding=(1, 1, 1, 1)),
}


@pytest.mark.parametrize("name", ISSUE_EXAMPLES)
def test_issue_reproducers_compute_what_pytorch_computes(name, tmp_path):
  case = ISSUE_EXAMPLES[name]
  rng = np.random.default_rng(0)
  x, weight = rng.standard_normal(case["x"], np.float32), rng.standard_normal(case["weight"], np.float32)
  np.save(tmp_path / "x.npy", x)
  np.save(tmp_path / "w.npy", weight)
  code = (
      "import jax, numpy as np, convtranspose as ct; "
      f"x, w = np.load({str(tmp_path / 'x.npy')!r}), np.load({str(tmp_path / 'w.npy')!r}); "
      f"loss, grads = jax.value_and_grad(lambda x, w: (ct.conv2d_transpose(x, w, None, {case['stride']}, 'pad', "
      f"{case['padding']}) ** 2).sum(), (0, 1))(x, w); "
      f"np.save({str(tmp_path / 'y.npy')!r}, np.asarray(ct.conv2d_transpose(x, w, None, {case['stride']}, 'pad', "
      f"{case['padding']})))"
  )
  result = run_python("-c", code)
  assert result.returncode == 0, describe(result)
  top, bottom, left, right = case["padding"]
  full = torch.nn.functional.conv_transpose2d(torch.tensor(x), torch.tensor(weight), stride=case["stride"]).numpy()
  expected = full[:, :, top:full.shape[2] - bottom, left:full.shape[3] - right]  # PyTorch pads symmetrically only
  np.testing.assert_allclose(np.load(tmp_path / "y.npy"), expected, rtol=1e-5, atol=1e-5)
  assert expected.shape == ct.conv2d_transpose(x, weight, None, case["stride"], "pad", case["padding"]).shape


@pytest.mark.parametrize("config", [FORWARD_CASE, WEIGHT_GRADIENT_CASE, OUTPUT_PADDING_CASE],
                         ids=["forward", "weight-gradient", "output-padding-channels-last"])
def test_the_phase_algorithm_needs_no_guard(config):
  """The phase decomposition convolves the undilated input: the pattern needs base dilation, so never matches."""
  result = run_probe("--config", repr(config), "--unguarded", "--phase")
  assert result.returncode == 0, describe(result)
