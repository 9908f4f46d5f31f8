"""Checkpoints and state dicts from real MindSpore 2.10 and PyTorch 2.13 (``fixtures/make_checkpoints.py``)."""

import ast
import json
import pathlib

import flax.linen as nn
import jax
import jax.numpy as jnp
import ml_dtypes
import numpy as np
import pytest
import safetensors
import safetensors.torch
import torch
from flax import nnx

import convtranspose as ct
from conftest import FIXTURES, _tuples, assert_close
from convtranspose import interop

LAYERS = {1: ct.Conv1dTranspose, 2: ct.Conv2dTranspose, 3: ct.Conv3dTranspose}
MINDSPORE = np.load(FIXTURES / "mindspore_checkpoints.npz")
TORCH = np.load(FIXTURES / "torch_decoders.npz")
DECODERS = ("decoder1d", "decoder2d", "decoder3d")
CHECKPOINTS = sorted(FIXTURES.glob("mindspore_*.ckpt"))
SAFETENSORS = sorted(FIXTURES.glob("*.safetensors"))
MINDSPORE_FORMATS = ("ckpt", "safetensors")


class Decoder(nn.Module):
  """``decoder.<name>`` layers with ReLU between them, named as the MindSpore and PyTorch models name them."""

  rank: int
  layers: tuple[tuple[str, tuple], ...]  # (name, sorted kwargs items)

  @nn.compact
  def __call__(self, x):
    for i, (name, kwargs) in enumerate(self.layers):
      x = LAYERS[self.rank](**dict(kwargs), name=name)(x)
      x = jax.nn.relu(x) if i + 1 < len(self.layers) else x
    return x


class Net(nn.Module):
  rank: int
  layers: tuple[tuple[str, tuple], ...]

  @nn.compact
  def __call__(self, x):
    return Decoder(self.rank, self.layers, name="decoder")(x)


class NNXNet(nnx.Module):
  """`Net` in NNX: ``self.decoder.<name>`` layers, the attribute paths MindSpore's and PyTorch's names follow."""

  def __init__(self, rank: int, layers: tuple[tuple[str, tuple], ...], *, rngs: nnx.Rngs):
    self.decoder = NNXDecoder(rank, layers, rngs=rngs)

  def __call__(self, x):
    return self.decoder(x)


class NNXDecoder(nnx.Module):
  def __init__(self, rank: int, layers: tuple[tuple[str, tuple], ...], *, rngs: nnx.Rngs):
    self.names = tuple(name for name, _ in layers)
    for name, kwargs in layers:
      setattr(self, name, NNX_LAYERS[rank](**dict(kwargs), rngs=rngs))

  def __call__(self, x):
    for i, name in enumerate(self.names):
      x = getattr(self, name)(x)
      x = jax.nn.relu(x) if i + 1 < len(self.names) else x
    return x


NNX_LAYERS = {1: ct.nnx.Conv1dTranspose, 2: ct.nnx.Conv2dTranspose, 3: ct.nnx.Conv3dTranspose}


def _model(fixture, name: str) -> tuple[Net, np.ndarray, np.ndarray]:
  spec = json.loads(str(fixture["configs"]))[name]
  layers = tuple((layer, tuple(sorted(_tuples(config).items()))) for layer, config in spec["layers"].items())
  return Net(len(spec["input_shape"]) - 2, layers), fixture[f"{name}/x"], fixture[f"{name}/y"]


# ---------------------------------------------------------------------------------------------------------
# MindSpore checkpoints


@pytest.mark.parametrize("suffix", MINDSPORE_FORMATS)
@pytest.mark.parametrize("name", DECODERS)
def test_mindspore_checkpoint_runs_our_model_to_mindspores_output(name, suffix):
  model, x, expected = _model(MINDSPORE, name)
  flat = interop.load_mindspore_checkpoint(FIXTURES / f"mindspore_{name}.{suffix}")
  assert all(key.startswith("decoder.up") and key.endswith((".weight", ".bias")) for key in flat)
  params = interop.to_flax_params(flat)
  shapes = jax.tree.map(np.shape, model.init(jax.random.key(0), x)["params"])
  assert jax.tree.map(np.shape, params) == shapes  # MindSpore's parameters are ours, shapes included
  assert_close(jax.jit(model.apply)({"params": params}, x), expected)


@pytest.mark.parametrize("suffix", MINDSPORE_FORMATS)
@pytest.mark.parametrize("name", DECODERS)
def test_mindspore_checkpoint_loads_into_an_nnx_model_and_saves_back(name, suffix, tmp_path):
  """load_into_nnx: MindSpore's output; save_mindspore_checkpoint(model): MindSpore's names and values, in the
  format the path's suffix names (safetensors with MindSpore's metadata)."""
  model, x, expected = _model(MINDSPORE, name)
  net = NNXNet(model.rank, model.layers, rngs=nnx.Rngs(0))
  path = FIXTURES / f"mindspore_{name}.{suffix}"
  flat = interop.load_mindspore_checkpoint(path)
  assert interop.load_into_nnx(net, flat) == ([], [])
  assert_close(nnx.jit(lambda net, x: net(x))(net, x), expected)
  interop.save_mindspore_checkpoint(net, tmp_path / f"saved.{suffix}")
  saved = interop.load_mindspore_checkpoint(tmp_path / f"saved.{suffix}")
  assert sorted(saved) == sorted(flat)
  for key in flat:
    np.testing.assert_array_equal(saved[key], flat[key])
  assert _metadata(tmp_path / f"saved.{suffix}") == ({"format": "ms"} if suffix == "safetensors" else None)


def _metadata(path):
  """A safetensors file's header metadata (None for any other file), read by the safetensors package."""
  if path.suffix != ".safetensors":
    return None
  with safetensors.safe_open(path, framework="numpy") as file:
    return file.metadata()


def test_mindspores_safetensors_hold_its_ckpts_values():
  for name in DECODERS:
    ckpt = interop.load_mindspore_checkpoint(FIXTURES / f"mindspore_{name}.ckpt")
    tensors = interop.load_mindspore_checkpoint(FIXTURES / f"mindspore_{name}.safetensors")
    assert list(tensors) == sorted(ckpt)  # the header's (sorted) order
    jax.tree.map(np.testing.assert_array_equal, tensors, ckpt)
    assert _metadata(FIXTURES / f"mindspore_{name}.safetensors") == {"format": "ms"}


def test_load_into_nnx_checks_names_shapes_and_dtypes():
  net = NNXNet(2, (("up1", (("has_bias", True), ("in_channels", 4), ("kernel_size", 3), ("out_channels", 2))),),
               rngs=nnx.Rngs(0))
  weight, bias = np.ones((4, 2, 3, 3), np.float32), np.full((2,), 0.5, np.float32)
  training = {"decoder.up1.weight": weight, "decoder.up1.bias": bias, "moments.decoder.up1.weight": weight}
  assert interop.load_into_nnx(net, training) == ([], ["moments.decoder.up1.weight"])
  np.testing.assert_array_equal(net.decoder.up1.bias[...], bias)
  with pytest.raises(ValueError, match=r"no value for the model's parameters \['decoder.up1.bias'\]"):
    interop.load_into_nnx(net, {"decoder.up1.weight": weight})
  assert interop.load_into_nnx(net, {"decoder.up1.weight": 2 * weight}, strict=False) == (["decoder.up1.bias"], [])
  np.testing.assert_array_equal(net.decoder.up1.weight[...], 2 * weight)
  with pytest.raises(ValueError, match=r"'decoder.up1.weight' has shape \(4, 2, 3\), but the model's parameter "
                                       r"has shape \(4, 2, 3, 3\)"):
    interop.load_into_nnx(net, {"decoder.up1.weight": weight[..., 0], "decoder.up1.bias": bias})
  with pytest.raises(TypeError, match="has dtype int32, but the model's parameter has dtype float32"):
    interop.load_into_nnx(net, {"decoder.up1.weight": weight.astype(np.int32), "decoder.up1.bias": bias})
  half = NNXNet(2, (("up1", (("in_channels", 4), ("kernel_size", 3), ("out_channels", 2),
                             ("param_dtype", jnp.bfloat16))),), rngs=nnx.Rngs(0))
  interop.load_into_nnx(half, {"decoder.up1.weight": weight})  # float32 into bfloat16, as MindSpore casts
  assert half.decoder.up1.weight[...].dtype == jnp.bfloat16


def test_the_fixtures_cover_crc_and_slices():
  crc = (FIXTURES / "mindspore_decoder2d.ckpt").read_bytes()
  assert crc[-17:-10] == b"crc_num"  # saved with crc_check=True
  sliced = (FIXTURES / "mindspore_decoder3d.ckpt").read_bytes()
  messages = [tag for tag, *_ in interop._values(memoryview(sliced), len(sliced))]
  assert len(messages) > len(set(messages)) == 4  # a tensor split over consecutive messages


def test_every_dtype_mindspore_writes():
  expected = json.loads(str(MINDSPORE["dtypes/names"]))
  loaded = interop.load_mindspore_checkpoint(FIXTURES / "mindspore_dtypes.ckpt")
  assert list(loaded) == list(expected)  # MindSpore's names, in its order
  type_names = {np.dtype(np.bool_): "Bool", np.dtype(ml_dtypes.bfloat16): "BFloat16"}
  for name, array in loaded.items():
    assert isinstance(array, np.ndarray)
    if expected[name]["dtype"] == "str":
      assert array.shape == () and str(array) == expected[name]["value"] == "héllo ✓"
      continue
    dtype_name = type_names.get(array.dtype, array.dtype.name.replace("uint", "UInt").replace("int", "Int")
                                .replace("float", "Float"))
    assert dtype_name == expected[name]["dtype"], name
    assert list(array.shape) == expected[name]["shape"]
    np.testing.assert_array_equal(array.astype(np.float64), MINDSPORE[f"dtypes/{name}"])
  assert {"BFloat16", "Float16", "Float64", "UInt64", "Int8", "Bool"} <= {e["dtype"] for e in expected.values()}


@pytest.mark.parametrize("name", ["decoder1d", "decoder2d", "dtypes"])
def test_our_writer_writes_mindspores_bytes(name, tmp_path):
  """MindSpore loads what we write: the file is byte for byte the one MindSpore wrote (CRC trailer included).
  The fixture script also loads our files with MindSpore itself."""
  path = FIXTURES / f"mindspore_{name}.ckpt"
  original = path.read_bytes()
  interop.save_mindspore_checkpoint(interop.load_mindspore_checkpoint(path), tmp_path / "ours.ckpt",
                                    crc_check=original[-17:-10] == b"crc_num")
  assert (tmp_path / "ours.ckpt").read_bytes() == original


def test_sliced_checkpoint_round_trips(tmp_path):
  loaded = interop.load_mindspore_checkpoint(FIXTURES / "mindspore_decoder3d.ckpt")
  interop.save_mindspore_checkpoint(interop.to_flax_params(loaded), tmp_path / "ours.ckpt")
  again = interop.load_mindspore_checkpoint(tmp_path / "ours.ckpt")
  assert list(again) == list(loaded)
  jax.tree.map(np.testing.assert_array_equal, again, loaded)


@pytest.mark.parametrize("suffix", MINDSPORE_FORMATS)
@pytest.mark.parametrize("param_dtype", [jnp.float32, jnp.bfloat16, jnp.float16])
def test_flax_params_round_trip(param_dtype, suffix, tmp_path):
  model, x, _ = _model(MINDSPORE, "decoder2d")
  model = Net(model.rank, tuple((n, (*kw, ("param_dtype", param_dtype))) for n, kw in model.layers))
  params = model.init(jax.random.key(0), x)["params"]
  interop.save_mindspore_checkpoint(params, tmp_path / f"model.{suffix}")
  loaded = interop.load_mindspore_checkpoint(tmp_path / f"model.{suffix}")
  names = ["decoder.up1.weight", "decoder.up1.bias", "decoder.up2.weight", "decoder.up2.bias", "decoder.up3.weight"]
  assert list(loaded) == (names if suffix == "ckpt" else sorted(names))
  restored = interop.to_flax_params(loaded)
  assert jax.tree.map(lambda a: a.dtype, restored) == jax.tree.map(lambda a: a.dtype, params)
  jax.tree.map(np.testing.assert_array_equal, restored, params)


def test_scalars_strings_and_empty_tensors_round_trip(tmp_path):
  values = {"step": 3, "lr": 0.5, "flag": True, "note": "ünïcode", "empty": np.zeros((0, 3), np.int32),
            "big_endian": np.arange(4, dtype=">i4")}
  interop.save_mindspore_checkpoint(values, tmp_path / "v.ckpt")
  loaded = interop.load_mindspore_checkpoint(tmp_path / "v.ckpt")
  assert {k: (v.dtype, v.shape) for k, v in loaded.items()} == {
      "step": (np.int64, ()), "lr": (np.float64, ()), "flag": (np.bool_, ()), "note": (np.dtype("<U7"), ()),
      "empty": (np.int32, (0, 3)), "big_endian": (np.int32, (4,))}
  assert str(loaded["note"]) == "ünïcode" and loaded["lr"] == 0.5
  np.testing.assert_array_equal(loaded["big_endian"], np.arange(4))


def test_to_flax_params_rejects_ambiguous_names():
  with pytest.raises(ValueError, match=r"'a\.b' is both a value and a prefix"):
    interop.to_flax_params({"a.b.c": 1, "a.b": 2})
  with pytest.raises(ValueError, match=r"'a\.b\.c' nests under 'a\.b', which is a value itself"):
    interop.to_flax_params({"a.b": 2, "a.b.c": 1})
  with pytest.raises(ValueError, match=r"the name 'a\.\.b' has an empty part"):
    interop.to_flax_params({"a..b": 1})


def test_save_rejects_what_mindspore_cannot_hold(tmp_path):
  with pytest.raises(TypeError, match=r"`params`: 'x\.w' has dtype complex64, which a MindSpore checkpoint cannot"):
    interop.save_mindspore_checkpoint({"x": {"w": np.zeros(2, np.complex64)}}, tmp_path / "c.ckpt")
  with pytest.raises(TypeError, match=r"`crc_check` must be a bool, but got 1 of type int"):
    interop.save_mindspore_checkpoint({}, tmp_path / "c.ckpt", crc_check=1)
  with pytest.raises(TypeError, match=r"`params`: 'note' has dtype <U2, which a safetensors file cannot hold"):
    interop.save_mindspore_checkpoint({"note": "hi"}, tmp_path / "c.safetensors")
  with pytest.raises(ValueError, match=r"`format` must be 'ckpt' or 'safetensors' .* but got 'npz'"):
    interop.save_mindspore_checkpoint({}, tmp_path / "c.ckpt", format="npz")
  with pytest.raises(ValueError, match=r"`crc_check` applies to the 'ckpt' format"):
    interop.save_mindspore_checkpoint({}, tmp_path / "c.safetensors", crc_check=True)


def test_format_follows_the_suffix_unless_named(tmp_path):
  """MindSpore's ``format=``; the reader tells the formats apart by their bytes, whatever the file's name."""
  values = {"w": np.arange(6, dtype=np.float32).reshape(2, 3), "b": np.ones(2, ml_dtypes.bfloat16)}
  interop.save_mindspore_checkpoint(values, tmp_path / "a.safetensors")
  interop.save_mindspore_checkpoint(values, tmp_path / "b.bin", format="safetensors")
  interop.save_mindspore_checkpoint(values, tmp_path / "c.bin")
  assert (tmp_path / "a.safetensors").read_bytes() == (tmp_path / "b.bin").read_bytes()
  assert (tmp_path / "c.bin").read_bytes()[:1] == b"\x0a"  # a protobuf message: the .ckpt format
  for name in ("a.safetensors", "b.bin", "c.bin"):
    loaded = interop.load_mindspore_checkpoint(tmp_path / name)
    assert sorted(loaded) == ["b", "w"] and loaded["b"].dtype == ml_dtypes.bfloat16
    jax.tree.map(np.testing.assert_array_equal, loaded, values)


# ---------------------------------------------------------------------------------------------------------
# Files that are not checkpoints, corrupt or truncated: ValueError naming the file and the offset


def _message(tag: str, dims: list[int], tensor_type: str, content: bytes) -> bytes:
  """A hand-built ``Checkpoint`` message, to make files MindSpore would never write."""
  dims_bytes = b"".join(interop._varint_bytes(8) + interop._varint_bytes(d) for d in dims)
  tensor = dims_bytes + interop._field(2, tensor_type.encode()) + interop._field(3, content)
  return interop._field(1, interop._field(1, tag.encode()) + interop._field(2, tensor))


@pytest.mark.parametrize(
    "content, problem",
    [
        (b"", r"at byte offset 0: the file is empty"),
        (b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR", r"at byte offset 0: a checkpoint holds only field 1"),
        (_message("w", [2], "Int4", b"\0"), r"at byte offset 0: tensor_type 'Int4' is not supported"),
        (_message("w", [3], "Float32", b"\0" * 8), r"at byte offset 0: 8 bytes of content do not make a Float32 tensor of shape \(3,\)"),
        (_message("s", [0], "str", b"\xff\xff\xff\xff"), r"at byte offset 0: string value is not UTF-32"),
        (_message("w", [1], "Int8", b"\1") + b"crc_num" + bytes(10), r"at byte offset 18: CRC-32 mismatch"),
        (_message("w", [1], "Int8", b"\1")[:-1], r"at byte offset 0: field 1 of 16 bytes runs past the end"),
        (interop._field(1, interop._field(1, b"m") + interop._field(3, b"")), r"at byte offset 5: a MapParameter"),
        (interop._field(1, interop._field(2, b"")), r"at byte offset 4: TensorProto lacks its required tensor_type"),
        (interop._field(1, interop._field(1, b"\xc3(")), r"at byte offset 4: tag is not UTF-8"),
        (_message("w", [2**64 - 1], "Int8", b""), r"at byte offset 7: negative dimension in \[-1\]"),
        (b"\x0a\xff\xff\xff\xff\xff\xff\xff\xff\xff\xff\x01", r"at byte offset 1: varint longer than 10 bytes"),
        (b"\x0b", r"at byte offset 0: wire type 3 \(field 1\) is not used by MindSpore"),
    ],
    ids=["empty", "png", "int4", "length", "utf32", "crc", "truncated", "map", "required", "utf8", "dims", "varint",
         "group"],
)
def test_bad_files_raise_value_error_naming_file_and_offset(content, problem, tmp_path):
  path = tmp_path / "bad.ckpt"
  path.write_bytes(content)
  with pytest.raises(ValueError, match=rf"^'{path}' is not a valid MindSpore checkpoint: {problem}"):
    interop.load_mindspore_checkpoint(path)


def _safetensors(header: dict, data: bytes, length: int | None = None) -> bytes:
  """A hand-built safetensors file, to make files no writer would."""
  text = json.dumps(header).encode()
  return (len(text) if length is None else length).to_bytes(8, "little") + text + data


@pytest.mark.parametrize(
    "content, problem",
    [
        (_safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8))[:20],
         r"not a valid safetensors file: .*"),
        (_safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(8), length=30),
         r"not a valid safetensors file: .*"),
        (_safetensors({"w": {"dtype": "F33", "shape": [2], "data_offsets": [0, 8]}}, bytes(8)),
         r"not a valid safetensors file: .*"),
        (_safetensors({"w": {"dtype": "F32", "shape": [3], "data_offsets": [0, 8]}}, bytes(8)),
         r"not a valid safetensors file: .*"),
        (_safetensors({"w": {"dtype": "F32", "shape": [2], "data_offsets": [0, 8]}}, bytes(12)),
         r"not a valid safetensors file: .*"),
        (_safetensors({"w": {"dtype": "F8_E8M0", "shape": [2], "data_offsets": [0, 2]}}, bytes(2)),
         # safetensors 0.8 reads F8_E8M0, which NumPy has no type for; 0.4 rejects the header itself
         r"(tensor 'w' has the safetensors dtype 'F8_E8M0', which is not supported|not a valid safetensors file)"),
    ],
    ids=["truncated", "header-length", "dtype", "shape", "trailing-bytes", "unsupported-dtype"],
)
def test_bad_safetensors_raise_value_error_naming_the_file(content, problem, tmp_path):
  path = tmp_path / "bad.safetensors"
  path.write_bytes(content)
  for load in (interop.load_mindspore_checkpoint, interop.from_torch_state_dict):
    with pytest.raises(ValueError, match=rf"^'{path}'(: | is ){problem}"):
      load(path)


def _write_wrong_file(kind: str, path: pathlib.Path) -> None:
  """A file of ``kind``, written by the library its users write it with."""
  state = {"up.weight": torch.ones(2, 3, 4)}
  if kind == "torch":
    torch.save(state, path)
  elif kind == "torch-legacy":
    torch.save(state, path, _use_new_zipfile_serialization=False)
  elif kind in ("npz", "npy"):
    with open(path, "wb") as file:  # as given: NumPy adds no suffix to a file object
      if kind == "npz":
        np.savez(file, weight=np.ones(3))
      else:
        np.save(file, np.ones(3))
  elif kind == "ckpt":
    interop.save_mindspore_checkpoint({"up": {"weight": np.ones((2, 3, 4), np.float32)}}, path)


@pytest.mark.parametrize(
    "kind, readers, said",
    [
        ("torch", "both", r"a PyTorch file \(`torch.save`\); read it with `torch.load\(path, weights_only=True\)` and "
                          r"pass the state dict to `convtranspose.interop.from_torch_state_dict`"),
        ("torch-legacy", "both", r"a pickle \(a PyTorch file of before 1.6, say\); read it with `torch.load"),
        ("npz", "both", r"a NumPy `.npz` archive \(`numpy.savez`\); read it with `numpy.load\(path\)`"),
        ("npy", "both", r"a NumPy `.npy` file; read it with `numpy.load\(path\)`"),
        ("ckpt", "safetensors", r"a MindSpore checkpoint \(`.ckpt`\); read it with "
                                r"`convtranspose.interop.load_mindspore_checkpoint`, not as a safetensors file"),
    ],
)
def test_a_file_of_another_format_is_named(kind, readers, said, tmp_path):
  """A `.pt` or `.npz` given to the checkpoint reader said "found field 10 of wire type 0", and a `.pt` given
  to the safetensors reader "header too large"; each now says what the file is and what reads it."""
  path = tmp_path / "weights"
  _write_wrong_file(kind, path)
  loads = {"checkpoint": interop.load_mindspore_checkpoint, "safetensors": interop.from_torch_state_dict}
  for reader, load in loads.items():
    if readers in ("both", reader):
      with pytest.raises(ValueError, match=rf"^'{path}' is {said}"):
        load(path)


@pytest.mark.parametrize("path", SAFETENSORS, ids=[p.name for p in SAFETENSORS])
def test_every_safetensors_truncation_raises_value_error(path, tmp_path):
  data, truncated = path.read_bytes(), tmp_path / "t.safetensors"
  for end in range(len(data)):
    truncated.write_bytes(data[:end])
    with pytest.raises(ValueError, match=rf"^'{truncated}'"):
      interop.load_mindspore_checkpoint(truncated)


@pytest.mark.parametrize("path", CHECKPOINTS, ids=[p.stem for p in CHECKPOINTS])
def test_every_truncation_raises_value_error_or_is_a_whole_prefix(path, tmp_path):
  """Protobuf messages carry no end mark: a file cut exactly between two messages (or before its CRC trailer)
  is a valid checkpoint of its first tensors, for MindSpore too, unless the cut splits a sliced tensor. Every
  other cut raises."""
  data, full = path.read_bytes(), interop.load_mindspore_checkpoint(path)
  end_of_messages = len(data) - 17 if data[-17:-10] == b"crc_num" else len(data)
  boundaries = {offset for *_, offset in interop._values(memoryview(data), end_of_messages)} | {end_of_messages}
  truncated, prefixes = tmp_path / "t.ckpt", 0
  for end in range(len(data)):
    truncated.write_bytes(data[:end])
    if end in boundaries - {0}:
      try:
        prefix = interop.load_mindspore_checkpoint(truncated)
      except ValueError as error:
        assert "bytes of content do not make a" in str(error)  # half a sliced tensor
      else:
        assert list(prefix) == list(full)[:len(prefix)]
        prefixes += 1
      continue
    with pytest.raises(ValueError, match="is not a valid MindSpore checkpoint: at byte offset"):
      interop.load_mindspore_checkpoint(truncated)
  assert prefixes >= len(full) - 1


@pytest.mark.parametrize("path", [*CHECKPOINTS, *SAFETENSORS, FIXTURES / "torch_decoder2d.pt",
                                  FIXTURES / "torch_decoders.npz"], ids=lambda p: p.name)
def test_fuzzed_files_load_or_raise_value_error(path, tmp_path):
  """Hundreds of mutations per file (flipped, inserted, deleted and overwritten bytes, splices): the reader
  returns arrays or raises ValueError, nothing else."""
  rng = np.random.default_rng(sum(path.name.encode()))
  data, mutated = path.read_bytes(), tmp_path / "m.ckpt"
  outcomes = {"loaded": 0, "ValueError": 0}
  for _ in range(300):
    buffer = bytearray(data)
    for _ in range(rng.integers(1, 4)):
      at = int(rng.integers(len(buffer)))
      kind = rng.integers(5)
      if kind == 0:
        buffer[at] ^= 1 << int(rng.integers(8))
      elif kind == 1:
        buffer[at:at] = rng.bytes(int(rng.integers(1, 9)))
      elif kind == 2:
        del buffer[at:at + int(rng.integers(1, 9))]
      elif kind == 3:
        buffer[at] = int(rng.choice([0, 0x7F, 0x80, 0xFF]))
      else:
        buffer = buffer[:at] + buffer[int(rng.integers(len(buffer))):]
    mutated.write_bytes(bytes(buffer))
    try:
      loaded = interop.load_mindspore_checkpoint(mutated)
    except ValueError as error:
      assert str(error).startswith(repr(str(mutated)))
      # a checkpoint's byte offset, a safetensors problem, or the format the bytes are (a torch or NumPy zip)
      assert any(part in str(error) for part in ("byte offset", "safetensors", "not a MindSpore checkpoint."))
      outcomes["ValueError"] += 1
    else:
      assert all(isinstance(v, np.ndarray) for v in loaded.values())
      outcomes["loaded"] += 1
  assert outcomes["ValueError"] > 0


# ---------------------------------------------------------------------------------------------------------
# PyTorch state dicts


def _torch_params(name: str, suffix: str) -> dict:
  """A PyTorch fixture's parameters: the state dict ``torch.save`` wrote, or the path of its safetensors file."""
  path = FIXTURES / f"torch_{name}.{suffix}"
  return interop.from_torch_state_dict(torch.load(path, weights_only=True) if suffix == "pt" else path,
                                       unit_height=True)  # the fixtures' models are built of the legacy layers


@pytest.mark.parametrize("suffix", ["pt", "safetensors"])
@pytest.mark.parametrize("name", DECODERS)
def test_torch_state_dict_runs_our_model_to_pytorchs_output(name, suffix):
  model, x, expected = _model(TORCH, name)
  params = _torch_params(name, suffix)
  assert jax.tree.map(np.shape, params) == jax.tree.map(np.shape, model.init(jax.random.key(0), x)["params"])
  assert_close(jax.jit(model.apply)({"params": params}, x), expected)


@pytest.mark.parametrize("suffix", ["pt", "safetensors"])
@pytest.mark.parametrize("name", DECODERS)
def test_torch_state_dict_runs_our_nnx_model_to_pytorchs_output(name, suffix):
  model, x, expected = _model(TORCH, name)
  net = NNXNet(model.rank, model.layers, rngs=nnx.Rngs(0))
  assert interop.load_into_nnx(net, _torch_params(name, suffix)) == ([], [])
  assert_close(net(x), expected)


@pytest.mark.parametrize("name", DECODERS)
def test_saved_torch_state_dict_is_pytorchs(name, tmp_path):
  """What `save_torch_state_dict` writes from a linen tree and from an NNX model, `safetensors.torch.load_file`
  reads as PyTorch's own state dict: its names, shapes (the legacy 1-D layers' unit height dropped) and values."""
  state_dict = torch.load(FIXTURES / f"torch_{name}.pt", weights_only=True)
  params = interop.from_torch_state_dict(state_dict, unit_height=True)
  model, _, _ = _model(TORCH, name)
  net = NNXNet(model.rank, model.layers, rngs=nnx.Rngs(0))
  interop.load_into_nnx(net, params)
  unit_height = name == "decoder1d"
  for source, path in ((params, tmp_path / "linen.safetensors"), (net, tmp_path / "nnx.safetensors")):
    interop.save_torch_state_dict(source, path, unit_height=unit_height)
    saved = safetensors.torch.load_file(path)
    assert sorted(saved) == sorted(state_dict)
    for key, tensor in state_dict.items():
      torch.testing.assert_close(saved[key], tensor, rtol=0, atol=0)
    assert _metadata(path) == {"format": "pt"}


def test_torch_1d_weights_keep_pytorchs_shape_by_default():
  """PyTorch's layout for PyTorch files, both ways: the default reads and writes PyTorch's 1-D weight as it
  is (reading once gave it MindSpore's unit height while writing kept it), which the mint layer stores."""
  weight = torch.randn(4, 3, 5)
  params = interop.from_torch_state_dict({"up.weight": weight, "up.bias": torch.zeros(3)})
  np.testing.assert_array_equal(params["up"]["weight"], weight.numpy())
  layer = ct.nnx.ConvTranspose1d(4, 3, 5, rngs=nnx.Rngs(0))
  assert interop.load_into_nnx(layer, {"weight": params["up"]["weight"], "bias": params["up"]["bias"]}) == ([], [])
  with pytest.raises(TypeError, match="`unit_height` must be a bool"):
    interop.from_torch_state_dict({"up.weight": weight}, unit_height=0)


def test_a_1d_weight_in_the_other_shape_names_what_to_pass():
  weight = np.ones((4, 3, 5), np.float32)
  legacy = ct.nnx.Conv1dTranspose(4, 3, 5, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"has shape \(4, 3, 5\), but the model's parameter has shape \(4, 3, 1, 5\)\. "
                                       r"It is PyTorch's 1-D weight.*`from_torch_state_dict\(\.\.\., unit_height=True\)`"):
    interop.load_into_nnx(legacy, {"weight": weight}, strict=False)
  mint = ct.nnx.ConvTranspose1d(4, 3, 5, rngs=nnx.Rngs(0))
  with pytest.raises(ValueError, match=r"It is a legacy 1-D layer's weight.*`weight\[:, :, 0\]`"):
    interop.load_into_nnx(mint, {"weight": weight[:, :, None]}, strict=False)
  with pytest.raises(ValueError, match=r"`weight` must have 3 dimensions \(C_in, C_out // group, k\) for a 1-D "
                                       r"transposed convolution, but got shape \(4, 3, 1, 5\)\. That is the weight a "
                                       r"legacy 1-D layer .* pass `weight\[:, :, 0\]`"):
    ct.conv1d_transpose(np.ones((1, 4, 6), np.float32), weight[:, :, None])


def test_torch_bfloat16_and_1d_weights():
  weight = torch.randn(4, 3, 5).to(torch.bfloat16)
  params = interop.from_torch_state_dict({"up.weight": weight, "up.bias": torch.ones(3, dtype=torch.bfloat16)},
                                        unit_height=True)
  assert params["up"]["weight"].dtype == ml_dtypes.bfloat16 and params["up"]["weight"].shape == (4, 3, 1, 5)
  np.testing.assert_array_equal(params["up"]["weight"][:, :, 0].astype(np.float32), weight.float().numpy())
  assert params["up"]["bias"].shape == (3,)


def test_interop_imports_no_jax():
  """The module is loadable where only NumPy is (the fixture script loads it beside MindSpore): JAX and Flax
  are imported only inside the functions that take an NNX model."""
  tree = ast.parse(pathlib.Path(interop.__file__).read_text())
  imported = {alias.name for node in tree.body if isinstance(node, ast.Import) for alias in node.names}
  imported |= {node.module for node in tree.body if isinstance(node, ast.ImportFrom)}
  assert imported and not {name for name in imported if name.split(".")[0] in ("jax", "flax")}


# ---------------------------------------------------------------------------------------------------------
# Orbax: our parameters are plain pytrees of arrays, sharded ones included


def test_orbax_saves_and_restores_linen_and_nnx_parameters_sharded(tmp_path):
  """`orbax.checkpoint.StandardCheckpointer` round trip on an explicit (4, 2) mesh of 8 simulated devices: linen
  variables and an NNX model's state come back with their values and shardings, and give the same outputs."""
  import orbax.checkpoint as ocp
  from jax.sharding import NamedSharding
  from jax.sharding import PartitionSpec as P

  def like(tree):  # the restore target: each array's shape, dtype and sharding
    return jax.tree.map(lambda a: jax.ShapeDtypeStruct(a.shape, a.dtype, sharding=a.sharding), tree)

  mesh = jax.make_mesh((4, 2), ("data", "model"), axis_types=(jax.sharding.AxisType.Explicit,) * 2)
  x = jax.random.normal(jax.random.key(0), (8, 8, 5, 5))
  linen = ct.Conv2dTranspose(8, 4, 4, stride=2, pad_mode="pad", padding=1, has_bias=True, bias_init="uniform",
                             logical_axes=True)
  checkpointer = ocp.StandardCheckpointer()
  with jax.set_mesh(mesh):
    abstract = jax.eval_shape(linen.init, jax.random.key(0), x)
    shardings = nn.logical_to_mesh_sharding(nn.get_partition_spec(abstract), mesh, ct.sharding.axis_rules())
    variables = nn.unbox(jax.jit(linen.init, out_shardings=shardings)(jax.random.key(0), x))
    checkpointer.save(tmp_path / "linen", variables)
    with nn.logical_axis_rules(ct.sharding.axis_rules()):
      net = ct.nnx.ConvTranspose2d(8, 4, 4, stride=2, padding=1, logical_axes=True, rngs=nnx.Rngs(0))
      fresh = ct.nnx.ConvTranspose2d(8, 4, 4, stride=2, padding=1, logical_axes=True, rngs=nnx.Rngs(1))
    checkpointer.save(tmp_path / "nnx", nnx.state(net, nnx.Param))
    checkpointer.wait_until_finished()
    restored = checkpointer.restore(tmp_path / "linen", like(variables))
    nnx.update(fresh, checkpointer.restore(tmp_path / "nnx", like(nnx.state(fresh, nnx.Param))))
    xs = jax.device_put(x, NamedSharding(mesh, P("data")))
    outputs = [jax.jit(linen.apply)(tree, xs) for tree in (variables, restored)]
    outputs += [nnx.jit(lambda net, x: net(x))(model, xs) for model in (net, fresh)]
  assert restored["params"]["weight"].sharding.spec == P(None, "model", None, None)
  assert fresh.weight[...].sharding.spec == P(None, "model", None, None)
  jax.tree.map(np.testing.assert_array_equal, restored, variables)
  np.testing.assert_array_equal(fresh.weight[...], net.weight[...])
  np.testing.assert_array_equal(outputs[1], outputs[0])
  np.testing.assert_array_equal(outputs[3], outputs[2])


# ---------------------------------------------------------------------------------------------------------
# A whole model: MindSpore's DCGAN generator with BatchNorm (`tests/fixtures/make_generator.py`).


class NNXGenerator(nnx.Module):
  def __init__(self, rngs: nnx.Rngs):
    self.up1 = ct.nnx.Conv2dTranspose(8, 6, 4, 2, "pad", 1, rngs=rngs)
    self.bn1 = nnx.BatchNorm(6, use_running_average=True, momentum=0.9, epsilon=1e-5, rngs=rngs)  # MindSpore's
    self.up2 = ct.nnx.Conv2dTranspose(6, 3, 4, 2, "pad", 1, has_bias=True, rngs=rngs)

  def __call__(self, x):
    h = nnx.relu(self.bn1(self.up1(x).transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2))
    return self.up2(h)  # the fixture leaves out the generator's Tanh


class LinenGenerator(nn.Module):
  @nn.compact
  def __call__(self, x):
    h = ct.Conv2dTranspose(8, 6, 4, 2, "pad", 1, name="up1")(x).transpose(0, 2, 3, 1)
    h = nn.BatchNorm(use_running_average=True, momentum=0.9, epsilon=1e-5, name="bn1")(h).transpose(0, 3, 1, 2)
    return ct.Conv2dTranspose(6, 3, 4, 2, "pad", 1, has_bias=True, name="up2")(nn.relu(h))


def test_a_generator_with_batchnorm_round_trips_through_mindspores_names(tmp_path):
  """MindSpore's BatchNorm names its variables ``gamma``, ``beta``, ``moving_mean``, ``moving_variance``; an NNX
  model and linen variables load them (the running statistics included), reproduce MindSpore's output, and
  save them back under the same names (NNX's ``mean``/``var`` were dropped on save and unused on load)."""
  flat = interop.load_mindspore_checkpoint(FIXTURES / "mindspore_generator.ckpt")
  golden = np.load(FIXTURES / "mindspore_generator.npz")
  assert {"bn1.moving_mean", "bn1.moving_variance", "bn1.gamma", "bn1.beta"} <= set(flat)

  model = NNXGenerator(nnx.Rngs(0))
  assert interop.load_into_nnx(model, flat) == ([], [])
  assert_close(model(golden["x"]), golden["y"])
  variables = interop.to_flax_variables(flat)
  assert_close(LinenGenerator().apply(variables, golden["x"]), golden["y"])

  for source, name in ((model, "nnx.ckpt"), (variables, "linen.ckpt"), (model, "nnx.safetensors")):
    interop.save_mindspore_checkpoint(source, tmp_path / name)
    saved = interop.load_mindspore_checkpoint(tmp_path / name)
    assert sorted(saved) == sorted(flat)
    for key, value in flat.items():
      np.testing.assert_array_equal(saved[key], value)

  reloaded = NNXGenerator(nnx.Rngs(1))
  interop.load_into_nnx(reloaded, interop.load_mindspore_checkpoint(tmp_path / "nnx.ckpt"))
  assert_close(reloaded(golden["x"]), golden["y"])


def test_batchnorm_names_of_pytorch_and_flax_load_too(tmp_path):
  """A PyTorch state dict's BatchNorm (``running_mean``, ``num_batches_tracked``) loads into the same NNX model,
  and `save_torch_state_dict` writes PyTorch's names, which ``torch.nn.BatchNorm2d`` loads."""
  flat = interop.load_mindspore_checkpoint(FIXTURES / "mindspore_generator.ckpt")
  model = NNXGenerator(nnx.Rngs(0))
  interop.load_into_nnx(model, flat)
  interop.save_torch_state_dict(model, tmp_path / "g.safetensors")
  state_dict = safetensors.torch.load_file(tmp_path / "g.safetensors")
  assert {"bn1.weight", "bn1.bias", "bn1.running_mean", "bn1.running_var"} <= set(state_dict)
  batchnorm = torch.nn.BatchNorm2d(6)
  batchnorm.load_state_dict({key[4:]: value for key, value in state_dict.items() if key.startswith("bn1.")},
                            strict=False)
  torch.testing.assert_close(batchnorm.running_var, torch.from_numpy(flat["bn1.moving_variance"]))
  state_dict["bn1.num_batches_tracked"] = torch.tensor(3)
  fresh = NNXGenerator(nnx.Rngs(2))
  assert interop.load_into_nnx(fresh, interop.from_torch_state_dict(state_dict)) == ([], ["bn1.num_batches_tracked"])
  np.testing.assert_array_equal(fresh.bn1.var[...], flat["bn1.moving_variance"])
  assert interop.load_into_nnx(fresh, nnx.to_pure_dict(nnx.state(model, (nnx.Param, nnx.BatchStat)))) == ([], [])
