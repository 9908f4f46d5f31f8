"""Weights in and out: MindSpore checkpoints without MindSpore, PyTorch state dicts, Flax parameter trees and
Flax NNX models.

A MindSpore ``.ckpt`` file is a sequence of serialized protobuf ``Checkpoint`` messages (MindSpore's
``checkpoint.proto``), one per tensor or per slice of a large tensor, optionally followed by a CRC trailer::

  message Checkpoint { repeated Value value = 1; }
  message Value { required string tag = 1; oneof value { TensorProto tensor = 2; MapTensorProto maptensor = 3; } }
  message TensorProto { repeated int64 dims = 1; required string tensor_type = 2; required bytes tensor_content = 3; }
  trailer (only with ``crc_check=True``): b"crc_num" + CRC-32 of everything before it, 10 bytes big-endian.

Consecutive values with the same tag are slices of one tensor, joined in order; a scalar is stored with
``dims`` empty or ``[0]``; a string with ``tensor_type == 'str'`` and its UTF-32 code units as content.
This module reads and writes that format with NumPy alone (``ml_dtypes`` supplies bfloat16), so neither
MindSpore nor protobuf is needed, and it imports no JAX (`load_into_nnx` and an NNX model given to
`save_mindspore_checkpoint` import Flax when called).

MindSpore 2.4 and later also write safetensors (``save_checkpoint(..., format='safetensors')``): the same
names and layouts, with the header metadata ``{"format": "ms"}``; Hugging Face repositories ship PyTorch
state dicts as safetensors (``{"format": "pt"}``). The ``safetensors`` package reads and writes those; the
loaders here tell the two formats apart by the file's first bytes.

>>> import numpy as np, tempfile, os
>>> path = os.path.join(tempfile.mkdtemp(), 'net.ckpt')
>>> save_mindspore_checkpoint({'up1': {'weight': np.ones((3, 2, 4, 4), np.float32)}}, path)
>>> {name: array.shape for name, array in load_mindspore_checkpoint(path).items()}
{'up1.weight': (3, 2, 4, 4)}
>>> to_flax_params({'decoder.up1.weight': 1, 'decoder.up1.bias': 2, 'head.weight': 3})
{'decoder': {'up1': {'weight': 1, 'bias': 2}}, 'head': {'weight': 3}}
"""

import binascii
import io
import math
import os
import zipfile
from collections.abc import Iterator, Mapping
from typing import Any

import ml_dtypes
import numpy as np
import safetensors

# MindSpore's ``tensor_type`` names (``str(mindspore.dtype)``) and the NumPy dtypes of their bytes. MindSpore
# writes its host's (little-endian) byte order.
_DTYPES = {
    "Bool": np.dtype(np.bool_),
    "Int8": np.dtype("<i1"),
    "Int16": np.dtype("<i2"),
    "Int32": np.dtype("<i4"),
    "Int64": np.dtype("<i8"),
    "UInt8": np.dtype("<u1"),
    "UInt16": np.dtype("<u2"),
    "UInt32": np.dtype("<u4"),
    "UInt64": np.dtype("<u8"),
    "Float16": np.dtype("<f2"),
    "Float32": np.dtype("<f4"),
    "Float64": np.dtype("<f8"),
    "BFloat16": np.dtype(ml_dtypes.bfloat16),
}
_TYPE_NAMES = {dtype: name for name, dtype in _DTYPES.items()}
_STRING_TYPE = "str"

_CRC_MARK = b"crc_num"
_CRC_TRAILER_LENGTH = len(_CRC_MARK) + 10

# MindSpore splits a tensor into 512 MiB slices (``SLICE_SIZE`` KiB in its serialization module), one message
# each, which keeps every message far below protobuf's 2 GiB limit.
_SLICE_BYTES = 512 * 1024 * 1024

_VARINT, _FIXED64, _LENGTH_DELIMITED, _FIXED32 = 0, 1, 2, 5


class _MalformedError(Exception):
  """A malformed file: what is wrong and the byte offset where it was found."""

  def __init__(self, offset: int, problem: str):
    super().__init__(offset, problem)
    self.offset, self.problem = offset, problem


def _varint(data: memoryview, offset: int, end: int) -> tuple[int, int]:
  """Decodes the base-128 varint at ``offset``; returns its value and the offset after it."""
  value, start = 0, offset
  for shift in range(0, 70, 7):
    if offset >= end:
      raise _MalformedError(offset, "truncated varint")
    byte = data[offset]
    offset += 1
    value |= (byte & 0x7F) << shift
    if byte < 0x80:
      if value >= 1 << 64:
        raise _MalformedError(start, "varint longer than 64 bits")
      return value, offset
  raise _MalformedError(start, "varint longer than 10 bytes")


def _fields(data: memoryview, start: int, end: int) -> Iterator[tuple[int, int, Any, int]]:
  """Yields ``(field_number, wire_type, value, offset)`` for each field of the message in ``data[start:end]``.

  A varint's value is an int; a length-delimited field's value is its ``(start, end)`` byte range.
  """
  offset = start
  while offset < end:
    field_offset = offset
    key, offset = _varint(data, offset, end)
    field_number, wire_type = key >> 3, key & 7
    if field_number == 0:
      raise _MalformedError(field_offset, "field number 0")
    if wire_type == _VARINT:
      value, offset = _varint(data, offset, end)
    elif wire_type == _LENGTH_DELIMITED:
      length, offset = _varint(data, offset, end)
      if length > end - offset:
        raise _MalformedError(field_offset, f"field {field_number} of {length} bytes runs past the end of its message "
                       f"({end - offset} bytes left)")
      value, offset = (offset, offset + length), offset + length
    elif wire_type in (_FIXED64, _FIXED32):
      width = 8 if wire_type == _FIXED64 else 4
      if width > end - offset:
        raise _MalformedError(field_offset, f"truncated {8 * width}-bit field {field_number}")
      value, offset = bytes(data[offset:offset + width]), offset + width
    else:
      raise _MalformedError(field_offset, f"wire type {wire_type} (field {field_number}) is not used by MindSpore")
    yield field_number, wire_type, value, field_offset


def _expect(field_number: int, wire_type: int, expected: int, message: str, offset: int) -> None:
  if wire_type != expected:
    raise _MalformedError(offset, f"field {field_number} of {message} has wire type {wire_type}, expected {expected}")


def _text(data: memoryview, span: tuple[int, int], what: str) -> str:
  try:
    return bytes(data[span[0]:span[1]]).decode("utf-8")
  except UnicodeDecodeError as error:
    raise _MalformedError(span[0] + error.start, f"{what} is not UTF-8") from None


def _tensor_proto(data: memoryview, start: int, end: int) -> tuple[list[int], str, tuple[int, int]]:
  """Parses a ``TensorProto``: its dims, its ``tensor_type`` and the byte range of its content."""
  dims, tensor_type, content = [], None, None
  for number, wire_type, value, offset in _fields(data, start, end):
    if number == 1 and wire_type == _VARINT:  # proto2 writes repeated int64 unpacked ...
      dims.append(value)
    elif number == 1 and wire_type == _LENGTH_DELIMITED:  # ... and accepts them packed
      packed_offset = value[0]
      while packed_offset < value[1]:
        dim, packed_offset = _varint(data, packed_offset, value[1])
        dims.append(dim)
    elif number == 2:
      _expect(number, wire_type, _LENGTH_DELIMITED, "TensorProto", offset)
      tensor_type = _text(data, value, "tensor_type")
    elif number == 3:
      _expect(number, wire_type, _LENGTH_DELIMITED, "TensorProto", offset)
      content = value
    else:
      raise _MalformedError(offset, f"TensorProto has no field {number}")
  if tensor_type is None or content is None:
    raise _MalformedError(start, f"TensorProto lacks its required {'tensor_type' if tensor_type is None else 'content'}")
  if any(dim >= 1 << 63 for dim in dims):
    raise _MalformedError(start, f"negative dimension in {[d - (1 << 64) if d >= 1 << 63 else d for d in dims]}")
  return dims, tensor_type, content


def _values(data: memoryview, end: int) -> Iterator[tuple[str, list[int], str, tuple[int, int], int]]:
  """Yields ``(tag, dims, tensor_type, content_range, offset)`` for each ``Checkpoint.Value`` in the file."""
  for number, wire_type, span, offset in _fields(data, 0, end):
    if number != 1 or wire_type != _LENGTH_DELIMITED:
      raise _MalformedError(offset, f"a checkpoint holds only field 1 (values), found field {number} "
                     f"of wire type {wire_type}")
    tag = tensor = None
    for value_number, value_wire_type, value, value_offset in _fields(data, *span):
      _expect(value_number, value_wire_type, _LENGTH_DELIMITED, "Checkpoint.Value", value_offset)
      if value_number == 1:
        tag = _text(data, value, "tag")
      elif value_number == 2:
        tensor = _tensor_proto(data, *value)
      elif value_number == 3:
        raise _MalformedError(value_offset, "a MapParameter (maptensor) is not supported")
      else:
        raise _MalformedError(value_offset, f"Checkpoint.Value has no field {value_number}")
    if tag is None or tensor is None:
      raise _MalformedError(offset, f"Checkpoint.Value lacks its {'tag' if tag is None else 'tensor'}")
    yield tag, *tensor, offset


def _array(dims: list[int], tensor_type: str, content: bytes, offset: int) -> np.ndarray:
  """The array MindSpore's ``load_checkpoint`` makes of one (joined) value."""
  if tensor_type == _STRING_TYPE:  # a Python str, as UTF-32 code units (NumPy's 'U' dtype)
    try:
      text = content.decode("utf-32-le").rstrip("\x00")
    except UnicodeDecodeError as error:
      raise _MalformedError(offset, f"string value is not UTF-32: {error.reason}") from None
    return np.array(text)
  if tensor_type not in _DTYPES:
    raise _MalformedError(offset, f"tensor_type {tensor_type!r} is not supported; supported: {sorted(_DTYPES)}")
  shape = () if dims == [0] else tuple(dims)
  dtype = _DTYPES[tensor_type]
  if len(content) != math.prod(shape) * dtype.itemsize:
    raise _MalformedError(offset, f"{len(content)} bytes of content do not make a {tensor_type} tensor of shape {shape}")
  return np.frombuffer(bytearray(content), dtype).reshape(shape)


def load_mindspore_checkpoint(path: str | os.PathLike) -> dict[str, np.ndarray]:
  """Reads a MindSpore checkpoint, ``.ckpt`` or safetensors (told apart by the file's bytes), without MindSpore.

  Returns the same names and values as ``mindspore.load_checkpoint(path)`` (``format='safetensors'`` for a
  safetensors file), as NumPy arrays: Bool, (U)Int8-64, Float16/32/64 as their NumPy dtypes, BFloat16 as
  ``ml_dtypes.bfloat16``, scalars as 0-d arrays, strings (saved by MindSpore's ``append_dict`` in a ``.ckpt``)
  as 0-d ``str`` arrays. A ``.ckpt``'s names come in the file's order, and its CRC trailer
  (``save_checkpoint(..., crc_check=True)``) is always verified; a safetensors file's names come sorted, as in
  its header. Any safetensors file reads (a Hugging Face one too: see `from_torch_state_dict`).

  Args:
    path: the checkpoint file (unencrypted; MindSpore's encrypted checkpoints need MindSpore and the key).

  Returns:
    ``{name: array}``, e.g. ``{'decoder.up1.weight': ..., 'decoder.up1.bias': ...}``; see `to_flax_params`.

  Raises:
    ValueError: the file is not a MindSpore checkpoint, or is corrupt or truncated; the message names the file
      (and for a ``.ckpt`` the byte offset).
  """
  with open(path, "rb") as file:
    data = file.read()
  if _is_safetensors(data):
    return _load_safetensors(data, path)
  _refuse_other_formats(data, path, "a MindSpore checkpoint")
  try:
    return _parse(memoryview(data))
  except _MalformedError as error:
    raise ValueError(f"{os.fspath(path)!r} is not a valid MindSpore checkpoint: at byte offset {error.offset}: "
                     f"{error.problem}.") from None


# The safetensors dtypes (the header's names) with a NumPy dtype; ``safetensors.serialize`` takes the NumPy names.
_SAFETENSORS_DTYPES = {
    "BOOL": np.dtype(np.bool_), "U8": np.dtype("<u1"), "I8": np.dtype("<i1"), "U16": np.dtype("<u2"),
    "I16": np.dtype("<i2"), "U32": np.dtype("<u4"), "I32": np.dtype("<i4"), "U64": np.dtype("<u8"),
    "I64": np.dtype("<i8"), "F16": np.dtype("<f2"), "BF16": np.dtype(ml_dtypes.bfloat16), "F32": np.dtype("<f4"),
    "F64": np.dtype("<f8"), "C64": np.dtype("<c8"), "F8_E4M3": np.dtype(ml_dtypes.float8_e4m3fn),
    "F8_E5M2": np.dtype(ml_dtypes.float8_e5m2),
}


# The largest header the safetensors package reads (its MAX_HEADER_SIZE).
_SAFETENSORS_MAX_HEADER = 100_000_000


def _is_safetensors(data: bytes) -> bool:
  """Whether ``data`` starts as a safetensors file does: the header's length (8 bytes, little-endian), then
  its JSON object. A ``.ckpt`` starts with a protobuf key (0x0A), lengths and a tag's bytes, which read as a
  length far beyond any header."""
  return data[8:9] == b"{" and int.from_bytes(data[:8], "little") <= _SAFETENSORS_MAX_HEADER


# Files people hand to the readers, told by their first bytes: what each is, and what reads it.
_TORCH_FILE = ("{}; read it with `torch.load(path, weights_only=True)` and pass the state dict to "
               "`convtranspose.interop.from_torch_state_dict`")
_NUMPY_FILE = "a NumPy {}; read it with `numpy.load(path)`"
_FORMATS = (
    (b"\x93NUMPY", _NUMPY_FILE.format("`.npy` file")),
    (b"\x89HDF\r\n\x1a\n", "an HDF5 file (Keras `.h5`, say); read it with `h5py`"),
    (b"\x80", _TORCH_FILE.format("a pickle (a PyTorch file of before 1.6, say)")),
    (b"GGUF", "a GGUF file (llama.cpp); read it with the `gguf` package"),
)


def _file_format(data: bytes) -> str | None:
  """What ``data`` is, if it is one of the formats people confuse with a checkpoint: a zip archive
  (`torch.save`'s or `numpy.savez`'s, told apart by their entries), a pickle, ``.npy``, HDF5 or GGUF."""
  if data[:4] == b"PK\x03\x04":
    try:
      with zipfile.ZipFile(io.BytesIO(data)) as archive:
        names = archive.namelist()
    except Exception:  # a damaged archive: zipfile raises many kinds (a name not UTF-8, an unknown version)
      return "a zip archive"
    if any(name.endswith("data.pkl") for name in names):
      return _TORCH_FILE.format("a PyTorch file (`torch.save`)")
    if names and all(name.endswith(".npy") for name in names):
      return _NUMPY_FILE.format("`.npz` archive (`numpy.savez`)")
    return "a zip archive"
  return next((what for magic, what in _FORMATS if data.startswith(magic)), None)


def _refuse_other_formats(data: bytes, path: str | os.PathLike, expected: str) -> None:
  """Raises ValueError naming what ``data`` is, if it is a format `_file_format` knows."""
  what = _file_format(data)
  if what is not None:
    raise ValueError(f"{os.fspath(path)!r} is {what}, not {expected}.")


def _load_safetensors(data: bytes, path: str | os.PathLike) -> dict[str, np.ndarray]:
  """The tensors of a safetensors file's bytes, by name in sorted order (the order of its header)."""
  if not _is_safetensors(data):
    _refuse_other_formats(data, path, "a safetensors file")
    try:
      _parse(memoryview(data))
    except _MalformedError:
      pass
    else:
      raise ValueError(f"{os.fspath(path)!r} is a MindSpore checkpoint (`.ckpt`); read it with "
                       "`convtranspose.interop.load_mindspore_checkpoint`, not as a safetensors file.")
  try:
    tensors = safetensors.deserialize(data)
  except safetensors.SafetensorError as error:
    raise ValueError(f"{os.fspath(path)!r} is not a valid safetensors file: {error}.") from None
  arrays = {}
  for name, tensor in sorted(tensors):
    dtype = _SAFETENSORS_DTYPES.get(tensor["dtype"])
    if dtype is None:
      raise ValueError(f"{os.fspath(path)!r}: tensor {name!r} has the safetensors dtype {tensor['dtype']!r}, which "
                       f"is not supported; supported: {sorted(_SAFETENSORS_DTYPES)}.")
    shape = tuple(tensor["shape"])
    if len(tensor["data"]) != math.prod(shape) * dtype.itemsize:  # safetensors checks this too
      raise ValueError(f"{os.fspath(path)!r}: tensor {name!r} has {len(tensor['data'])} bytes, not those of a "
                       f"{tensor['dtype']} tensor of shape {shape}.")
    arrays[name] = np.frombuffer(tensor["data"], dtype).reshape(shape)
  return arrays


def _save_safetensors(tree: Any, path: str | os.PathLike, metadata: dict[str, str]) -> None:
  """Writes the arrays of a (nested) mapping as a safetensors file, names joined with dots."""
  arrays = {}
  for name, value in _flatten(tree):
    array = np.asarray(value)
    if array.dtype.byteorder == ">":
      array = array.astype(array.dtype.newbyteorder("<"))
    if array.dtype not in _SAFETENSORS_DTYPES.values():
      raise TypeError(f"`params`: {name!r} has dtype {array.dtype}, which a safetensors file cannot hold; "
                      f"supported: {', '.join(str(d) for d in _SAFETENSORS_DTYPES.values())}.")
    arrays[name] = np.ascontiguousarray(array)
  specs = {name: _tensor_spec(array) for name, array in arrays.items()}
  safetensors.serialize_file(specs, path, metadata=metadata)  # `arrays` keeps the buffers alive until written


def _tensor_spec(array: np.ndarray) -> Any:
  """What ``safetensors.serialize_file`` takes for one array: a `TensorSpec` pointing at its buffer (safetensors
  0.8 and later), or a dict holding its bytes (before)."""
  if hasattr(safetensors, "TensorSpec"):
    return safetensors.TensorSpec(dtype=array.dtype.name, shape=array.shape, data_ptr=array.ctypes.data,
                                  data_len=array.nbytes)
  return {"dtype": array.dtype.name, "shape": array.shape, "data": array.tobytes()}


def _parse(data: memoryview) -> dict[str, np.ndarray]:
  end = len(data)
  if end == 0:
    raise _MalformedError(0, "the file is empty")
  if end >= _CRC_TRAILER_LENGTH and data[end - _CRC_TRAILER_LENGTH:end - 10] == _CRC_MARK:
    end -= _CRC_TRAILER_LENGTH
    stored, computed = int.from_bytes(data[end + len(_CRC_MARK):], "big"), binascii.crc32(data[:end])
    if stored != computed:
      raise _MalformedError(end, f"CRC-32 mismatch: the trailer says {stored:#010x}, the content has {computed:#010x}")
  # As in MindSpore: consecutive values with one tag are slices of one tensor, which takes the last slice's
  # dims and type; a tag seen again later replaces the earlier tensor.
  arrays, slices, last = {}, [], None
  for tag, dims, tensor_type, content, offset in _values(data, end):
    if last is not None and tag != last[0]:
      arrays[last[0]] = _array(*last[1:3], b"".join(slices), last[3])
      slices = []
    last = (tag, dims, tensor_type, offset)
    slices.append(data[content[0]:content[1]])
  if last is None:
    raise _MalformedError(0, "no tensors in the file")
  arrays[last[0]] = _array(*last[1:3], b"".join(slices), last[3])
  return arrays


def _flatten(tree: Mapping[str, Any], prefix: str = "") -> Iterator[tuple[str, Any]]:
  for key, value in tree.items():
    name = f"{prefix}{key}"
    if isinstance(value, Mapping):
      yield from _flatten(value, f"{name}.")
    else:
      yield name, value


def _varint_bytes(value: int) -> bytes:
  out = bytearray()
  while value >= 0x80:
    out.append(value & 0x7F | 0x80)
    value >>= 7
  out.append(value)
  return bytes(out)


def _field(number: int, payload: bytes) -> bytes:
  """A length-delimited field: key, length, payload."""
  return _varint_bytes(number << 3 | _LENGTH_DELIMITED) + _varint_bytes(len(payload)) + payload


def _messages(name: str, value: Any) -> Iterator[bytes]:
  """The serialized ``Checkpoint`` messages of one named value, as MindSpore's ``save_checkpoint`` writes them."""
  if isinstance(value, str) or (isinstance(value, np.ndarray) and value.dtype.kind == "U"):
    dims, tensor_type, content = [0], _STRING_TYPE, np.asarray(value, "<U").tobytes()
  else:
    array = np.asarray(value)  # a jax.Array, NumPy array or Python number
    tensor_type = _TYPE_NAMES.get(array.dtype.newbyteorder("<") if array.dtype.byteorder == ">" else array.dtype)
    if tensor_type is None:
      raise TypeError(f"`params`: {name!r} has dtype {array.dtype}, which a MindSpore checkpoint cannot hold; "
                      f"supported: {', '.join(str(d) for d in _TYPE_NAMES)} and str.")
    dims, content = list(array.shape), array.astype(_DTYPES[tensor_type], copy=False).tobytes()
  header = _field(1, name.encode("utf-8"))
  dims_bytes = b"".join(_varint_bytes(1 << 3 | _VARINT) + _varint_bytes(dim) for dim in dims)
  for start in range(0, max(len(content), 1), _SLICE_BYTES):
    tensor = dims_bytes + _field(2, tensor_type.encode()) + _field(3, content[start:start + _SLICE_BYTES])
    yield _field(1, header + _field(2, tensor))


def save_mindspore_checkpoint(params: Mapping[str, Any], path: str | os.PathLike, *, crc_check: bool = False,
                              format: str | None = None) -> None:
  """Writes parameters as a MindSpore checkpoint that ``mindspore.load_checkpoint`` reads: ``.ckpt`` or
  safetensors, as MindSpore's ``save_checkpoint(..., format=...)`` writes them.

  Nested names are joined with dots (``{'decoder': {'up1': {'weight': w}}}`` is saved as
  ``decoder.up1.weight``), the inverse of `to_flax_params`; a flat ``{name: array}`` is saved as it is. A
  ``.ckpt``'s bytes are those MindSpore's ``save_checkpoint`` writes for the same names, values and order; a
  safetensors file carries MindSpore's header metadata ``{"format": "ms"}``.

  Args:
    params: a (nested) mapping of names to arrays (``jax.Array``, NumPy, Python numbers) or strings, e.g. the
      ``'params'`` of a Flax model's variables, or its whole variables (``{'params': ..., 'batch_stats': ...}``);
      or a Flax NNX model (or `flax.nnx.State`), whose `flax.nnx.Param` and `flax.nnx.BatchStat` values are
      saved under their attribute paths, the names MindSpore's Cells give them when the attributes are named
      as the Cells were (``decoder.up1.weight``; list items as ``layers.0.weight``, as in a
      ``SequentialCell``). A BatchNorm's ``scale``, ``bias``, ``mean`` and ``var`` are saved as MindSpore's
      ``gamma``, ``beta``, ``moving_mean`` and ``moving_variance``. Python ints and floats become Int64 and
      Float64.
    path: the file to write.
    crc_check: append MindSpore's CRC-32 trailer, as ``save_checkpoint(..., crc_check=True)`` does (``.ckpt``
      only).
    format: ``'ckpt'`` or ``'safetensors'``; None (default) takes ``'safetensors'`` for a path ending in
      ``.safetensors``, else ``'ckpt'``.

  Raises:
    TypeError: a value's dtype has no MindSpore tensor type (e.g. complex; a string in safetensors).
    ValueError: an unknown ``format``, or ``crc_check`` with safetensors.
  """
  _check_bool(crc_check, "crc_check")
  if format is None:
    format = "safetensors" if os.fspath(path).endswith(".safetensors") else "ckpt"
  if format not in ("ckpt", "safetensors"):
    raise ValueError(f"`format` must be 'ckpt' or 'safetensors' (or None: by the path's suffix), but got {format!r}.")
  if format == "safetensors":
    if crc_check:
      raise ValueError("`crc_check` applies to the 'ckpt' format; a safetensors file has no CRC trailer.")
    _save_safetensors(_parameter_tree(params, "mindspore"), path, {"format": "ms"})
    return
  content = b"".join(message for name, value in _flatten(_parameter_tree(params, "mindspore"))
                     for message in _messages(name, value))
  if crc_check:
    content += _CRC_MARK + binascii.crc32(content).to_bytes(10, "big")
  with open(path, "wb") as file:
    file.write(content)


def _check_bool(value: Any, name: str) -> None:
  if not isinstance(value, bool):
    raise TypeError(f"`{name}` must be a bool, but got {value!r} of type {type(value).__name__}.")


def _is_nnx(value: Any) -> bool:
  """Whether ``value`` is a Flax NNX module or state, told without importing Flax."""
  return any(cls.__module__.startswith("flax.nnx") for cls in type(value).__mro__)


# Flax's BatchNorm variables (linen's ``params`` and ``batch_stats``, NNX's `flax.nnx.Param` and
# `flax.nnx.BatchStat`) under the names MindSpore's and PyTorch's BatchNorm layers give them.
_BATCHNORM_NAMES = {
    "mindspore": {"scale": "gamma", "bias": "beta", "mean": "moving_mean", "var": "moving_variance"},
    "torch": {"scale": "weight", "bias": "bias", "mean": "running_mean", "var": "running_var"},
}
_BATCH_STATS = ("mean", "var")


def _is_batchnorm(node: Any, names: Mapping[str, str]) -> bool:
  """Whether a nested-dict node holds a BatchNorm's variables under ``names`` (its running statistics)."""
  return isinstance(node, Mapping) and all(names[stat] in node for stat in _BATCH_STATS)


def _renamed_batchnorms(tree: Any, names: Mapping[str, str]) -> Any:
  """``tree`` with each BatchNorm's variables (a node holding ``mean`` and ``var``) renamed by ``names``."""
  if not isinstance(tree, Mapping):
    return tree
  rename = _is_batchnorm(tree, {stat: stat for stat in _BATCH_STATS})
  return {names.get(key, key) if rename else key: _renamed_batchnorms(value, names) for key, value in tree.items()}


def _merged(trees: list[Mapping[str, Any]]) -> dict[str, Any]:
  """Nested dicts merged into one (linen's collections share the module paths)."""
  merged: dict[str, Any] = {}
  for tree in trees:
    for key, value in tree.items():
      merged[key] = _merged([merged[key], value]) if isinstance(value, Mapping) and key in merged else value
  return merged


def _parameter_tree(params: Any, framework: str | None = None) -> Any:
  """The values to save, as a nested dict: ``params`` itself; an NNX model's (or state's) parameters and batch
  statistics; or linen's variables (``{'params': ..., 'batch_stats': ...}``) merged into one tree. With a
  ``framework``, each BatchNorm's variables take that framework's names (`_BATCHNORM_NAMES`)."""
  if _is_nnx(params):
    from flax import nnx  # only for an NNX model: this module needs no JAX otherwise

    state = params if isinstance(params, nnx.State) else nnx.state(params, (nnx.Param, nnx.BatchStat))
    params = nnx.to_pure_dict(state)
  elif isinstance(params, Mapping) and set(params) in ({"params"}, {"params", "batch_stats"}):
    params = _merged([params["params"], params.get("batch_stats", {})])
  return params if framework is None else _renamed_batchnorms(params, _BATCHNORM_NAMES[framework])


def to_flax_variables(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Nests dotted names into Flax linen variables, ``{'params': ..., 'batch_stats': ...}``, with each
  BatchNorm's values under Flax's names: MindSpore's ``gamma``, ``beta``, ``moving_mean``,
  ``moving_variance`` (or PyTorch's ``weight``, ``bias``, ``running_mean``, ``running_var``; its
  ``num_batches_tracked`` counter is left out) as ``params`` ``scale`` and ``bias`` and ``batch_stats``
  ``mean`` and ``var``. Everything else goes to ``params`` as `to_flax_params` nests it.

  >>> import numpy as np
  >>> variables = to_flax_variables({'up.weight': np.ones((2, 3, 4, 4)), 'bn.gamma': np.ones(3),
  ...                                'bn.beta': np.zeros(3), 'bn.moving_mean': np.zeros(3),
  ...                                'bn.moving_variance': np.ones(3)})
  >>> {name: sorted(tree['bn']) for name, tree in variables.items()}
  {'params': ['bias', 'scale'], 'batch_stats': ['mean', 'var']}
  """
  def split(node: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    names = next((names for names in _BATCHNORM_NAMES.values() if _is_batchnorm(node, names)), None)
    if names is not None:
      flax_names = {theirs: ours for ours, theirs in names.items()}
      node = {flax_names.get(key, key): value for key, value in node.items() if key != "num_batches_tracked"}
      return ({key: value for key, value in node.items() if key not in _BATCH_STATS},
              {key: node[key] for key in _BATCH_STATS})
    params, stats = {}, {}
    for key, value in node.items():
      if isinstance(value, Mapping):
        params[key], below = split(value)
        if below:
          stats[key] = below
      else:
        params[key] = value
    return params, stats

  params, stats = split(to_flax_params(flat))
  return {"params": params, "batch_stats": stats} if stats else {"params": params}


def load_into_nnx(model: Any, params: Mapping[str, Any], *, strict: bool = True) -> tuple[list[str], list[str]]:
  """Sets a Flax NNX model's parameters from a MindSpore checkpoint or a PyTorch state dict, in place.

  The counterpart of MindSpore's ``load_param_into_net``: each `flax.nnx.Param` (and `flax.nnx.BatchStat`) of
  ``model`` takes the value named by its attribute path (``decoder.up1.weight``; list items
  ``layers.0.weight``); an `flax.nnx.BatchNorm`'s ``scale``, ``bias``, ``mean`` and ``var`` take MindSpore's
  ``gamma``, ``beta``, ``moving_mean`` and ``moving_variance`` (PyTorch's ``weight``, ``bias``,
  ``running_mean``, ``running_var`` and Flax's own names are read too; they are reported under MindSpore's).
  Values keep the parameter's sharding. Between floating dtypes a value is cast to the parameter's dtype, as MindSpore's
  ``load_param_into_net`` casts (a float32 checkpoint into a bfloat16 model); any other difference raises.

  Args:
    model: a Flax NNX module, e.g. built from `convtranspose.nnx`'s layers named as the MindSpore cells were.
    params: ``{'decoder.up1.weight': array, ...}`` (`load_mindspore_checkpoint`), or a nested tree
      (`from_torch_state_dict`, `to_flax_params`).
    strict: raise if a parameter of ``model`` has no value in ``params``. Names in ``params`` that the model
      lacks (a training checkpoint's optimizer moments) never raise; they are returned.

  Returns:
    ``(params_not_loaded, names_not_used)``, MindSpore's pair: the model's parameters that kept their values,
    and the names in ``params`` that the model has no parameter for.

  Raises:
    ValueError: a shape differs, or (with ``strict``) a parameter has no value; the message names them.
    TypeError: a dtype differs other than between floating dtypes.
  """
  import jax
  import jax.numpy as jnp
  from flax import nnx  # imported here: the rest of this module needs no JAX

  nodes = list(nnx.iter_graph(model))
  batchnorms = {path for path, node in nodes if isinstance(node, nnx.BatchNorm)}
  targets, aliases = {}, {}  # MindSpore's names; PyTorch's and Flax's for a BatchNorm's variables
  for path, node in nodes:
    if isinstance(node, nnx.Param | nnx.BatchStat):
      *module, leaf = map(str, path)
      if tuple(path[:-1]) in batchnorms and leaf in _BATCHNORM_NAMES["mindspore"]:
        ours = _BATCHNORM_NAMES["mindspore"][leaf]
        for alias in (leaf, _BATCHNORM_NAMES["torch"][leaf]):
          aliases[".".join([*module, alias])] = ".".join([*module, ours])
        leaf = ours
      targets[".".join([*module, leaf])] = node
  given = dict(_flatten(params))
  values = {aliases.get(name, name): value for name, value in given.items()}
  missing = [name for name in targets if name not in values]
  if strict and missing:
    listed = f"{sorted(values)[:20]}{' ...' if len(values) > 20 else ''}"
    raise ValueError(f"`params` has no value for the model's parameters {missing}; it has {listed}. Pass "
                     "strict=False to keep their values.")
  for name, variable in targets.items():
    if name not in values:
      continue
    value, current = values[name], variable[...]
    if tuple(np.shape(value)) != tuple(current.shape):
      raise ValueError(f"`params`: {name!r} has shape {tuple(np.shape(value))}, but the model's parameter has "
                       f"shape {tuple(current.shape)}.{_unit_height_hint(np.shape(value), current.shape)}")
    dtype = np.asarray(value).dtype
    if dtype != current.dtype and not (jnp.issubdtype(dtype, jnp.floating)
                                       and jnp.issubdtype(current.dtype, jnp.floating)):
      raise TypeError(f"`params`: {name!r} has dtype {dtype}, but the model's parameter has dtype "
                      f"{current.dtype}; only floating dtypes are cast.")
    variable[...] = jax.device_put(jnp.asarray(value, current.dtype), getattr(current, "sharding", None))
  return missing, [name for name in given if aliases.get(name, name) not in targets]


def _unit_height_hint(given: tuple[int, ...], wanted: tuple[int, ...]) -> str:
  """What to pass when a 1-D weight arrives in the other framework's shape: PyTorch's ``(C_in, C_out // g, k)``
  for a legacy 1-D layer's ``(C_in, C_out // g, 1, k)``, or the other way."""
  given, wanted = tuple(given), tuple(wanted)
  if len(given) == 3 and wanted == (*given[:2], 1, given[2]):
    return (" It is PyTorch's 1-D weight; the legacy 1-D layers (`Conv1dTranspose`) store MindSpore's unit height: "
            "read the state dict with `from_torch_state_dict(..., unit_height=True)`, or build the model from "
            "`ConvTranspose1d`, which stores PyTorch's shape.")
  if len(wanted) == 3 and given == (*wanted[:2], 1, wanted[2]):
    return (" It is a legacy 1-D layer's weight, with MindSpore's unit height; the model's layer "
            "(`ConvTranspose1d`) stores PyTorch's shape: drop the axis (`unit_height=False`), e.g. "
            "`weight[:, :, 0]`.")
  return ""


def to_flax_params(flat: Mapping[str, Any]) -> dict[str, Any]:
  """Nests dotted names into a Flax parameter tree.

  A MindSpore network rebuilt from this library's modules, with submodules named as the MindSpore cells
  were, then runs as ``model.apply({'params': to_flax_params(flat)}, x)``. Keep only the network's parameters
  (a training checkpoint also holds optimizer moments and counters), e.g.
  ``{k: v for k, v in flat.items() if k.startswith('decoder.')}``.

  Args:
    flat: ``{'decoder.up1.weight': array, ...}``, e.g. from `load_mindspore_checkpoint`.

  Returns:
    ``{'decoder': {'up1': {'weight': array, ...}}}``.

  Raises:
    ValueError: a name has an empty part, or one name is a prefix of another (``a.b`` and ``a.b.c``).
  """
  tree: dict[str, Any] = {}
  for name, value in flat.items():
    *path, leaf = parts = name.split(".")
    if "" in parts:
      raise ValueError(f"`flat`: the name {name!r} has an empty part between dots.")
    node = tree
    for depth, part in enumerate(path):
      node = node.setdefault(part, {})
      if not isinstance(node, dict):
        raise ValueError(f"`flat`: {name!r} nests under {'.'.join(path[:depth + 1])!r}, which is a value itself.")
    if leaf in node:
      raise ValueError(f"`flat`: {name!r} is both a value and a prefix of other names.")
    node[leaf] = value
  return tree


def from_torch_state_dict(state_dict: Mapping[str, Any] | str | os.PathLike, *,
                          unit_height: bool = False) -> dict[str, Any]:
  """A PyTorch ``state_dict`` as a Flax parameter tree for this library's modules (linen's ``'params'``, or
  the values `load_into_nnx` sets in an NNX model); also read from a safetensors file (Hugging Face's
  ``model.safetensors``).

  ``torch.nn.ConvTranspose{1,2,3}d`` store ``weight`` as ``(C_in, C_out // groups, *kernel)`` and ``bias`` as
  ``(C_out,)``, the layout of MindSpore's layers and ours, so the names are nested (see `to_flax_params`) and
  the tensors turned into NumPy arrays (bfloat16 as ``ml_dtypes.bfloat16``), in PyTorch's shapes. One shape may
  change on request: MindSpore's legacy 1-D layers (`convtranspose.Conv1dTranspose`) store their weight with a
  unit height, ``(C_in, C_out // group, 1, k)``, so with ``unit_height=True`` every 3-D tensor named ``weight``
  (a 1-D convolution's) gains that axis; the mint vocabulary's `convtranspose.ConvTranspose1d` stores
  PyTorch's shape, the default here as in `save_torch_state_dict`. The mint layers (`convtranspose.ConvTranspose2d`, ...) take PyTorch's
  arguments as they are; for the legacy ones, ``padding=p`` -> ``pad_mode='pad', padding=p``, ``groups`` ->
  ``group``, ``bias`` -> ``has_bias``, and ``output_padding`` and ``dilation`` keep their names.

  Args:
    state_dict: ``{'decoder.up1.weight': torch.Tensor, ...}``, e.g. ``torch_model.state_dict()`` (NumPy arrays
      too), or the path of a safetensors file holding one (``safetensors.torch.save_file``,
      `save_torch_state_dict`).
    unit_height: give 3-D weights MindSpore's unit height (for the legacy 1-D layers). Default False.

  Returns:
    ``{'decoder': {'up1': {'weight': numpy.ndarray, ...}}}``.

  Raises:
    ValueError: a path that is not a valid safetensors file (the message names it).
  """
  _check_bool(unit_height, "unit_height")
  if isinstance(state_dict, str | os.PathLike):
    with open(state_dict, "rb") as file:
      state_dict = _load_safetensors(file.read(), state_dict)

  def to_numpy(tensor: Any) -> np.ndarray:
    if isinstance(tensor, np.ndarray):
      return tensor
    tensor = tensor.detach().cpu()
    if str(tensor.dtype) == "torch.bfloat16":  # NumPy has no bfloat16; float32 holds it exactly
      return tensor.float().numpy().astype(ml_dtypes.bfloat16)
    return tensor.numpy()

  def converted(name: str, tensor: Any) -> np.ndarray:
    array = to_numpy(tensor)
    one_d_weight = array.ndim == 3 and name.rsplit(".", 1)[-1] == "weight"
    return array[:, :, None] if unit_height and one_d_weight else array

  return to_flax_params({name: converted(name, tensor) for name, tensor in state_dict.items()})


def save_torch_state_dict(params: Any, path: str | os.PathLike, *, unit_height: bool = False) -> None:
  """Writes parameters as a PyTorch state dict in a safetensors file, which ``safetensors.torch.load_file``
  reads into ``torch_model.load_state_dict`` (Hugging Face's format; header metadata ``{"format": "pt"}``).

  The names are joined with dots, as `save_mindspore_checkpoint` joins them; this library's weights already
  have PyTorch's layout, ``(C_in, C_out // groups, *kernel)``.

  Args:
    params: a (nested) mapping of names to arrays, e.g. a linen model's ``'params'``, or a Flax NNX model or
      `flax.nnx.State`.
    path: the file to write.
    unit_height: drop the unit height of the legacy 1-D layers' weights (`convtranspose.Conv1dTranspose`'s
      ``(C_in, C_out // group, 1, k)``): every 4-D ``weight`` whose third axis has length 1 loses it. Only for
      models whose 2-D layers have no kernel of height 1. Default False.

  Raises:
    TypeError: a value's dtype has no safetensors type.
  """
  _check_bool(unit_height, "unit_height")

  def converted(name: str, value: Any) -> Any:
    one_d_weight = np.ndim(value) == 4 and np.shape(value)[2] == 1 and name.rsplit(".", 1)[-1] == "weight"
    return np.asarray(value)[:, :, 0] if unit_height and one_d_weight else value

  flat = {name: converted(name, value) for name, value in _flatten(_parameter_tree(params, "torch"))}
  _save_safetensors(flat, path, {"format": "pt"})
