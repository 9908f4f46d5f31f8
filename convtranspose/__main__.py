"""``python -m convtranspose``: the seed example and a short tour of what the library does."""

import pathlib
import subprocess
import sys
import tempfile

import jax
import jax.numpy as jnp
from flax import nnx
from jax import lax

import convtranspose as ct

# Flax's layer on a shape that makes XLA abort (jaxlib 0.10.2/0.11.2); run in a child process.
_FLAX_ABORT = """
import jax, jax.numpy as jnp, flax.linen as nn
layer = nn.ConvTranspose(1, (5, 2), strides=(2, 2), padding=((3, 3), (0, 0)))
x = jnp.ones((1, 2, 13, 1))
print(layer.apply(layer.init(jax.random.key(0), x), x).shape)
"""


def main() -> None:
  print("1. MindSpore's example, as a Flax linen module and as a Flax NNX module")
  net = ct.Conv2dTranspose(3, 64, 4, has_bias=False, weight_init="normal", pad_mode="pad")
  x = jnp.ones((1, 3, 16, 50), jnp.float32)
  variables = net.init(jax.random.key(0), x)
  y = jax.jit(net.apply)(variables, x)
  print("   params:", jax.tree.map(jnp.shape, variables))
  print("   output:", y.shape)
  cell = ct.nnx.Conv2dTranspose(3, 64, 4, has_bias=False, weight_init="normal", pad_mode="pad", rngs=nnx.Rngs(0))
  print("   NNX, parameters made at construction as a MindSpore Cell makes them: weight", cell.weight.shape,
        "-> output", nnx.jit(lambda cell, x: cell(x))(cell, x).shape)

  print("\n2. MindSpore's PyTorch-style vocabulary (mint.nn.ConvTranspose2d, ops.conv_transpose2d)")
  head = ct.nnx.ConvTranspose2d(64, 3, 4, stride=2, padding=1, rngs=nnx.Rngs(1))  # bias=True, U(-sqrt(k), sqrt(k))
  image = head(y)
  print("   ConvTranspose2d(64, 3, 4, stride=2, padding=1):", jax.tree.map(jnp.shape, nnx.to_pure_dict(
      nnx.state(head, nnx.Param))), y.shape, "->", image.shape)
  same = ct.conv_transpose2d(y, head.weight[...], head.bias[...], stride=2, padding=1)
  print("   conv_transpose2d(y, weight, bias, stride=2, padding=1) == the layer:", bool(jnp.array_equal(same, image)))

  weight = variables["params"]["weight"]
  print("\n3. The same layer as a pure function, and the output shape of every pad mode (stride 2)")
  same = ct.conv2d_transpose(x, weight, pad_mode="pad")
  print("   function == module:", bool(jnp.array_equal(same, y)))
  for pad_mode, padding in (("same", 0), ("valid", 0), ("pad", 1), ("pad", (0, 1, 2, 0))):
    shape = ct.conv_transpose_output_shape((16, 50), 4, stride=2, pad_mode=pad_mode, padding=padding)
    print(f"   pad_mode={pad_mode!r:8} padding={padding!s:13} -> {shape}")

  print("\n4. It is the adjoint of the forward convolution: <conv(z, W), x> == <z, conv_transpose(x, W)>")
  x = jax.random.normal(jax.random.key(1), (2, 3, 16, 50))
  out = ct.conv2d_transpose(x, weight, stride=2, pad_mode="pad", padding=1, precision=lax.Precision.HIGHEST)
  z = jax.random.normal(jax.random.key(2), out.shape)
  conv_z = lax.conv_general_dilated(z, weight, (2, 2), [(1, 1), (1, 1)], precision=lax.Precision.HIGHEST)
  forward, adjoint = float(jnp.vdot(conv_z, x)), float(jnp.vdot(z, out))
  print(f"   {forward:.9g} vs {adjoint:.9g}: relative difference {abs(forward - adjoint) / abs(forward):.1e} "
        "(float32 rounding)")

  print("\n5. jit, grad and vmap compose")
  def loss(w, x):
    return jnp.mean(ct.conv2d_transpose(x, w, stride=2, pad_mode="same") ** 2)

  grad = jax.jit(jax.grad(loss))(weight, x)
  per_example = jax.vmap(lambda xi: ct.conv2d_transpose(xi[None], weight, stride=2)[0])(x)
  print("   grad w.r.t. weight:", grad.shape, "  vmapped output:", per_example.shape)

  print("\n6. The family: 1-D and 3-D, output_padding, channels-last, unbatched")
  audio = ct.Conv1dTranspose(64, 32, 16, stride=8, pad_mode="pad", padding=4, weight_init="he_normal")
  signal = jnp.ones((4, 64, 100))
  print("   Conv1dTranspose(64, 32, 16, stride=8, pad_mode='pad', padding=4), (4, 64, 100) ->",
        audio.apply(audio.init(jax.random.key(4), signal), signal).shape)
  volume = ct.Conv3dTranspose(8, 4, 3, stride=2, pad_mode="pad", padding=1, output_padding=1, data_format="NDHWC")
  voxels = jnp.ones((6, 6, 6, 8))  # one unbatched (D, H, W, C) example
  print("   Conv3dTranspose(..., output_padding=1, data_format='NDHWC'), (6, 6, 6, 8) ->",
        volume.apply(volume.init(jax.random.key(5), voxels), voxels).shape)

  print("\n7. MindSpore's initializers by name or object")
  for init in ("HeUniform", "xavier_uniform", "orthogonal", ct.initializers.Normal(sigma=0.02)):
    w = ct.initializers.resolve(init)(jax.random.key(3), (3, 64, 4, 4))
    print(f"   {init!s:30} std {float(w.std()):.4f}")

  print("\n8. MindSpore checkpoints both ways, without MindSpore")
  with tempfile.TemporaryDirectory() as tmp:
    path = pathlib.Path(tmp) / "decoder.ckpt"
    ct.interop.save_mindspore_checkpoint({"decoder": {"up1": variables["params"]}}, path)
    flat = ct.interop.load_mindspore_checkpoint(path)
    print(f"   {path.name}: {path.stat().st_size} bytes, {jax.tree.map(jnp.shape, flat)}")
    params = ct.interop.to_flax_params(flat)["decoder"]["up1"]
    same = jnp.array_equal(net.apply({"params": params}, x), net.apply(variables, x))
    print("   the reloaded layer computes the same:", bool(same))

  print("\n9. Beyond MindSpore: output_size, circular padding, the layer in Flax's and PyTorch's terms")
  up = ct.Conv2dTranspose(3, 8, 3, stride=2, pad_mode="pad", padding=1, padding_mode="circular")
  skip = jnp.ones((1, 8, 32, 32))
  image = jnp.ones((1, 3, 16, 16))
  print("   Conv2dTranspose(3, 8, 3, stride=2, pad_mode='pad', padding=1, padding_mode='circular'),\n"
        "   output_size=skip.shape ->",
        up.apply(up.init(jax.random.key(6), image), image, output_size=skip.shape).shape)
  print("   the same layer with output_padding=1, in Flax's and PyTorch's terms:")
  print("   Flax nn.ConvTranspose padding:", ct.convert.flax_padding("pad", 1, (3, 3), 2, output_padding=1),
        "  PyTorch (padding, output_padding):", ct.convert.torch_padding("pad", 1, (3, 3), 2, output_padding=1))

  print("\n10. Never aborts: a shape on which XLA kills Flax's nn.ConvTranspose")
  child = subprocess.run([sys.executable, "-c", _FLAX_ABORT], capture_output=True, text=True)
  flax_result = child.stdout.strip() if child.returncode == 0 else f"process died (exit code {child.returncode})"
  ours = ct.conv2d_transpose(jnp.ones((1, 1, 2, 13)), jnp.ones((1, 1, 5, 2)), stride=2, pad_mode="pad", padding=1)
  print(f"   flax.linen.ConvTranspose: {flax_result}")
  print(f"   convtranspose:            {ours.shape}")


if __name__ == "__main__":
  main()
