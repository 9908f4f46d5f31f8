"""`convtranspose.tuning`: the lookup order of ``algorithm='auto'``, choices that follow the table (the value and
the training step apart), save and load, devices and processors kept apart, stale and corrupt files, `autotune`
with a fake clock over every entry point, trace-time tuning, meshes, and the numbers of every pair of choices."""

import functools
import itertools
import json
import re
import warnings

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AxisType
from jax.sharding import PartitionSpec as P

import convtranspose as ct
from conftest import assert_close, put_on
from convtranspose import _hybrid, tuning

X_SHAPE, W_SHAPE = (2, 4, 5, 5), (4, 3, 3, 3)


def layer(x, weight, algorithm="auto"):
  return ct.conv_transpose(x, weight, stride=2, pad_mode="pad", padding=1, output_padding=1, algorithm=algorithm)


def jitted(f):
  """``jax.jit`` of a new function: JAX caches a trace per function and shapes, and a tuning acts where one is
  traced."""
  return jax.jit(lambda *args: f(*args))


def operands(x_shape=X_SHAPE, w_shape=W_SHAPE):
  rng = np.random.default_rng(0)
  return (jnp.asarray(rng.standard_normal(x_shape), jnp.float32),
          jnp.asarray(rng.standard_normal(w_shape), jnp.float32))


def the_call(fn=layer, *args) -> tuning.LayerCall:
  (call,) = tuning.layers_of(fn, *(args or operands()))
  return call


def measured(signature, value="phase", trained="phase") -> tuning.Measured:
  """A table row whose fastest forward pass is ``value`` and whose fastest training step is ``trained``."""
  forward = {name: 1.0 if name == value else 2.0 for name in tuning.FORWARD_CANDIDATES}
  training = {name: 1.0 if name == trained else 2.0 for name in tuning.TRAINING_CANDIDATES}
  return tuning.Measured(signature, forward, training)


def table(value="phase", trained="phase", device=None, call=None) -> ct.Tuning:
  call = call or the_call()
  return ct.Tuning(*(device or tuning.device_of("cpu")), {call.signature: measured(call.signature, value, trained)})


@pytest.fixture(autouse=True)
def fresh_state(monkeypatch):
  """No process tuning, no tables shipped (unless a test ships one), no environment variable."""
  monkeypatch.setattr(tuning, "_STATE", tuning._ProcessState())
  monkeypatch.setattr(tuning, "_shipped", lambda: {})
  monkeypatch.delenv(tuning.ENVIRONMENT_VARIABLE, raising=False)


@pytest.fixture
def formulations(monkeypatch):
  """Each algorithm's operations named ``formulation_<name>`` (`jax.named_scope`): ``formulations(compiled)``
  lists the algorithms a compiled program still runs."""
  for name, formulation in dict(_hybrid.FORMULATIONS).items():
    def named(*args, _name=name, _formulation=formulation):
      with jax.named_scope(f"formulation_{_name}"):
        return _formulation(*args)
    monkeypatch.setitem(_hybrid.FORMULATIONS, name, named)
  return lambda compiled: sorted(set(re.findall(r"formulation_([a-z]+)", compiled.as_text())))


def chosen(x=None, weight=None):
  """What ``auto`` chooses for `layer` on CPU: the formulations its value and its training step trace."""
  x, weight = (x, weight) if x is not None else operands()
  return tuning.choice(the_call(layer, x, weight), "cpu")


def test_the_lookup_order_is_active_user_tuned_shipped_then_rule(monkeypatch):
  call = the_call()
  device = tuning.device_of("cpu")
  assert tuning.choice(call, "cpu") is None  # the rule's turn
  shipped = {device: table("dilated", "dilated")}
  monkeypatch.setattr(tuning, "_shipped", lambda: shipped)
  assert tuning.choice(call, "cpu") == _hybrid.Chosen("dilated", "dilated")
  tuning._STATE.tuned[device] = table("dilated", "hybrid")
  assert tuning.choice(call, "cpu") == _hybrid.Chosen("dilated", "hybrid")
  ct.use_tuning(table("phase", "dilated"))
  assert tuning.choice(call, "cpu") == _hybrid.Chosen("phase", "dilated")
  with table("phase", "phase"):
    assert tuning.choice(call, "cpu") == _hybrid.Chosen("phase", "phase")
    with table("dilated", "phase"):  # the innermost first
      assert tuning.choice(call, "cpu") == _hybrid.Chosen("dilated", "phase")
    assert tuning.choice(call, "cpu") == _hybrid.Chosen("phase", "phase")
  ct.use_tuning(None)
  assert tuning.choice(call, "cpu") == _hybrid.Chosen("dilated", "hybrid")


def test_a_table_for_another_layer_or_platform_leaves_the_rule():
  other = the_call(layer, *operands((3, 4, 5, 5)))  # another batch: another signature
  with table("dilated", "dilated", call=other):
    assert chosen() is None
  with table("dilated", "dilated"):
    assert tuning.choice(the_call(), "tpu") is None  # no TPU here: an export for one takes the rule
    assert tuning.choice(the_call(), "gpu") is None


@pytest.mark.parametrize("value, trained", [("dilated", "phase"), ("phase", "dilated"), ("phase", "hybrid"),
                                            ("dilated", "dilated")])
def test_the_program_follows_the_table_value_and_training_step_apart(formulations, value, trained):
  """The compiled program runs the table's value formulation undifferentiated, and its training formulation
  (value included) under `jax.grad`, nothing else."""
  x, weight = operands()
  with table(value, trained):
    assert formulations(jitted(layer).lower(x, weight).compile()) == [value]
    step = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(layer(x, w) ** 2), argnums=(0, 1)))
    assert formulations(step.lower(x, weight).compile()) == [trained]


@pytest.mark.parametrize("value, trained", list(itertools.product(tuning.FORWARD_CANDIDATES,
                                                                                tuning.TRAINING_CANDIDATES)))
def test_every_pair_of_choices_computes_the_layer_and_its_derivatives(value, trained):
  """Value, gradients with respect to each operand, a JVP and a second derivative, against the reference."""
  x, weight = operands()
  cotangent = jnp.asarray(np.random.default_rng(2).standard_normal((2, 3, 10, 10)), jnp.float32)

  def results(algorithm):
    f = functools.partial(layer, algorithm=algorithm)
    loss = lambda x, w: jnp.vdot(cotangent, jnp.sin(f(x, w)))  # noqa: E731
    return (jax.jit(f)(x, weight), jax.grad(loss, argnums=(0, 1))(x, weight), jax.grad(loss)(x, weight),
            jax.grad(loss, argnums=1)(x, weight), jax.jvp(f, (x, weight), (jnp.cos(x), jnp.sin(weight))),
            jax.grad(lambda w: jnp.sum(jax.grad(loss)(x, w) ** 2))(weight))

  with table(value, trained):
    ours = results("auto")
  jax.tree.map(assert_close, ours, results("dilated"))


def test_save_and_load_round_trip(tmp_path):
  tuning_ = ct.autotune(layer, *operands(), repeats=1, progress=False)
  path = tmp_path / "tuning.json"
  tuning_.save(path)
  data = json.loads(path.read_text())
  assert data["format"] == tuning.FORMAT and data["version"] == tuning.FORMAT_VERSION
  assert data["device_kind"] == "cpu" and data["processor"] == tuning.processor()
  assert {"jax", "jaxlib"} <= set(data)
  loaded = ct.Tuning.load(path)
  assert loaded.device == tuning_.device and loaded.versions == tuning_.versions
  assert [(m.signature, m.forward, m.training, m.value, m.trained) for m in loaded] == [
      (m.signature, m.forward, m.training, m.value, m.trained) for m in tuning_]
  assert str(loaded) == str(tuning_)
  assert the_call().signature in str(loaded) and "*" in str(loaded)


def test_a_tuning_file_named_by_the_environment_variable_is_used(tmp_path, monkeypatch):
  path = tmp_path / "tuning.json"
  table("dilated", "hybrid").save(path)
  monkeypatch.setenv(tuning.ENVIRONMENT_VARIABLE, str(path))
  assert chosen() == _hybrid.Chosen("dilated", "hybrid")


def test_devices_and_processors_are_kept_apart():
  """A table of another processor (same device kind) or another device kind is skipped, with one warning."""
  for device in (("cpu", "some other processor"), ("TPU v6 lite", None)):
    with pytest.warns(RuntimeWarning, match="is skipped on cpu"), table("dilated", "dilated", device=device):
      assert chosen() is None
    with warnings.catch_warnings():
      warnings.simplefilter("error")  # once
      with table("dilated", "dilated", device=device):
        assert chosen() is None


def _files(tmp_path):
  good = table("dilated", "dilated").to_json()
  text = json.dumps(good)
  return {
      "missing": None,
      "corrupt": "{not json",
      "truncated": text[: len(text) // 2],
      "not a tuning": json.dumps({"layers": []}),
      "other format version": json.dumps({**good, "version": tuning.FORMAT_VERSION + 1}),
      "unknown algorithm": json.dumps({**good, "layers": [{**good["layers"][0], "forward": {"fast": 1.0}}]}),
  }


@pytest.mark.parametrize("kind", ["missing", "corrupt", "truncated", "not a tuning", "other format version",
                                  "unknown algorithm"])
def test_a_bad_file_warns_once_and_the_rule_serves(tmp_path, monkeypatch, kind):
  path = tmp_path / "tuning.json"
  text = _files(tmp_path)[kind]
  if text is not None:
    path.write_text(text)
  with pytest.raises((OSError, ValueError), match=r"tuning\.json"):
    ct.Tuning.load(path)  # asked for explicitly: an error that names the file
  monkeypatch.setenv(tuning.ENVIRONMENT_VARIABLE, str(path))
  x, weight = operands()
  with pytest.warns(RuntimeWarning, match="tuning file skipped"):
    y = jitted(layer)(x, weight)  # never an exception inside jit
  assert_close(y, layer(x, weight, "dilated"))
  with warnings.catch_warnings():
    warnings.simplefilter("error")
    ct.use_tuning(None)
    monkeypatch.setattr(tuning, "_STATE", tuning._ProcessState(warned=tuning._STATE.warned))
    jitted(layer).lower(x, weight)  # read again: no second warning
  with pytest.warns(RuntimeWarning, match="tuning file skipped"):
    ct.use_tuning(tmp_path / "other.json")


def test_a_tuning_of_another_jax_version_is_stale(monkeypatch):
  stale = table("dilated", "dilated")
  stale.versions = {"jax": "0.0.1", "jaxlib": "0.0.1"}
  with pytest.warns(RuntimeWarning, match="stale"), stale:
    assert chosen() is None
  monkeypatch.setattr(tuning, "_shipped", lambda: {stale.device: stale})
  assert chosen() == _hybrid.Chosen("dilated", "dilated")  # a shipped table belongs to the package


class FakeClock:
  """A clock that only the fake programs advance."""

  def __init__(self):
    self.now = 0.0

  def __call__(self):
    return self.now


@pytest.fixture
def fake_programs(monkeypatch):
  """Programs that take ``durations[(algorithm, train)]`` seconds of a `FakeClock`; ``calls`` counts them."""
  clock, durations, calls = FakeClock(), {}, []

  def program(call, algorithm, train):
    def run(*operands):
      calls.append((algorithm, train))
      clock.now += durations[(algorithm, train)]
    return run

  monkeypatch.setattr(tuning, "program", program)
  return clock, durations, calls


def test_autotune_with_a_fake_clock_chooses_the_fastest_of_each(fake_programs):
  clock, durations, calls = fake_programs
  durations.update({("dilated", False): 0.010, ("phase", False): 0.020, ("dilated", True): 0.9,
                    ("phase", True): 0.030, ("hybrid", True): 0.025})
  result = ct.autotune(layer, *operands(), repeats=3, clock=clock, progress=False)
  (row,) = result
  assert row.forward == pytest.approx({"dilated": 0.010, "phase": 0.020})
  assert row.training == pytest.approx({"dilated": 0.9, "phase": 0.030, "hybrid": 0.025})
  assert (row.value, row.trained) == ("dilated", "hybrid")
  # Warm-up and at least three timed calls each, more until they add up to 50 ms; a far slower one once.
  assert calls.count(("dilated", True)) == 2
  assert calls.count(("phase", False)) == 4 and calls.count(("dilated", False)) == 6
  with result:
    assert chosen() == _hybrid.Chosen("dilated", "hybrid")
  assert "dilated 10*" in str(result) and "hybrid 25*" in str(result)


def test_autotune_of_a_function_without_the_layer_is_empty_and_says_so(capsys):
  result = ct.autotune(lambda x: jnp.sin(x) * 2, jnp.ones(3))
  assert len(result) == 0 and "no layers" in str(result)
  assert "calls no transposed convolution" in capsys.readouterr().err


def test_autotune_finds_every_entry_point_and_rank(fake_programs):
  """Functions, both vocabularies, linen and NNX modules, every rank, a jitted step traced before, layers
  under `jax.grad`: each distinct layer once. Layers with an explicit algorithm are not the table's."""
  clock, durations, _ = fake_programs
  durations.update({(name, train): 0.01 for name in tuning.TRAINING_CANDIDATES for train in (False, True)})
  x1, x2, x3 = jnp.ones((2, 4, 8)), jnp.ones((2, 4, 6, 6)), jnp.ones((1, 4, 4, 4, 4))
  legacy = ct.Conv2dTranspose(4, 8, 3, stride=2)
  mint = ct.nnx.ConvTranspose3d(4, 2, 2, stride=2, rngs=nnx.Rngs(0))
  variables = legacy.init(jax.random.key(0), x2)

  @jax.jit
  def step(variables, x1, x2, x3):
    def loss(variables):
      y1 = ct.conv_transpose1d(x1, jnp.ones((4, 3, 4)), stride=2, padding=1)
      y1_again = ct.conv_transpose1d(x1, jnp.ones((4, 3, 4)), stride=2, padding=1)
      pinned = ct.conv2d_transpose(x2, jnp.ones((4, 5, 3, 3)), algorithm="phase")
      return (jnp.sum(y1 + y1_again) + jnp.sum(legacy.apply(variables, x2)) + jnp.sum(mint(x3))
              + jnp.sum(pinned))
    return jax.grad(loss)(variables)

  step(variables, x1, x2, x3)  # traced and cached: autotune must still see its layers
  result = ct.autotune(step, variables, x1, x2, x3, clock=clock, progress=False)
  assert [signature.split(" ")[0] for signature in result.layers] == ["1-D", "2-D", "3-D"]


def test_algorithm_autotune_measures_at_trace_time_once(monkeypatch):
  measured_calls = []

  def measure(call, repeats=5, clock=None):
    measured_calls.append(call)
    return measured(call.signature, "dilated", "hybrid")

  monkeypatch.setattr(tuning, "measure", measure)
  x, weight = operands()
  jitted(functools.partial(layer, algorithm="autotune"))(x, weight)
  jitted(lambda x, w: layer(x, w, "autotune") * 2)(x, weight)  # another trace: remembered
  assert measured_calls == [the_call()]
  assert chosen() == _hybrid.Chosen("dilated", "hybrid")  # and 'auto' now finds it too
  jitted(layer)(*operands((3, 4, 5, 5)))  # 'auto' does not tune by default
  assert len(measured_calls) == 1
  assert not ct.tune_on_miss(True)
  jitted(layer)(*operands((3, 4, 5, 5)))
  assert len(measured_calls) == 2
  assert ct.tune_on_miss(False)


def _explicit_mesh():
  return jax.make_mesh((4, 2), ("data", "model"), axis_types=(AxisType.Explicit,) * 2)


def test_under_a_mesh_the_per_device_block_is_looked_up():
  """Explicit mesh: the block each device computes (batch over 'data', output channels over 'model');
  `jax.shard_map`: the local block; an `Auto` mesh, whose partitioning a trace cannot know: the global shape."""
  x, weight = operands((8, 4, 5, 5), (4, 6, 3, 3))
  mesh = _explicit_mesh()
  with jax.set_mesh(mesh):
    xs, ws = put_on(mesh, (x, weight), (P("data"), P(None, "model")))
    assert the_call(layer, xs, ws).input_shape == (2, 4, 5, 5)
    assert the_call(layer, xs, ws).weight_shape == (4, 3, 3, 3)
    local = jax.shard_map(layer, in_specs=(P("data"), P()), out_specs=P("data"))
    assert the_call(local, xs, weight).input_shape == (2, 4, 5, 5)
  auto_mesh = jax.make_mesh((8,), ("data",), axis_types=(AxisType.Auto,))
  xa = jax.device_put(x, jax.sharding.NamedSharding(auto_mesh, P("data")))
  assert the_call(jax.jit(layer), xa, weight).input_shape == (8, 4, 5, 5)


def test_a_tuned_block_computes_the_layer_under_a_mesh():
  x, weight = operands((8, 4, 5, 5), (4, 6, 3, 3))
  mesh = _explicit_mesh()
  block = the_call(layer, x[:2], weight[:, :3])
  with jax.set_mesh(mesh), table("dilated", "phase", call=block):
    xs, ws = put_on(mesh, (x, weight), (P("data"), P(None, "model")))
    assert tuning.choice(the_call(layer, xs, ws), "cpu") == _hybrid.Chosen("dilated", "phase")
    y, grads = jax.jit(jax.value_and_grad(lambda x, w: jnp.sum(layer(x, w) ** 2), argnums=(0, 1)))(xs, ws)
  expected = jax.value_and_grad(lambda x, w: jnp.sum(layer(x, w, "dilated") ** 2), argnums=(0, 1))(x, weight)
  jax.tree.map(assert_close, (y, grads), expected)


def test_linen_and_nnx_modules_follow_the_active_tuning(formulations):
  x = jnp.ones((2, 4, 5, 5))
  linen = ct.Conv2dTranspose(4, 6, 3, stride=2)
  variables = linen.init(jax.random.key(0), x)
  module = ct.nnx.ConvTranspose2d(4, 6, 3, stride=2, rngs=nnx.Rngs(0))
  calls = [the_call(lambda x: linen.apply(variables, x), x), the_call(lambda x: module(x), x)]
  both = ct.Tuning(*tuning.device_of("cpu"), {c.signature: measured(c.signature, "dilated", "phase") for c in calls})
  graph, state = nnx.split(module)
  with both:
    assert formulations(jax.jit(lambda v, x: linen.apply(v, x)).lower(variables, x).compile()) == ["dilated"]
    assert formulations(jax.jit(lambda s, x: nnx.merge(graph, s)(x)).lower(state, x).compile()) == ["dilated"]
    step = jax.jit(jax.grad(lambda s, x: jnp.sum(nnx.merge(graph, s)(x) ** 2)))
    assert formulations(step.lower(state, x).compile()) == ["phase"]
