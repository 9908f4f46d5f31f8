"""Bad arguments raise at construction, with MindSpore's exception types and messages naming the value."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import convtranspose as ct

# (kwargs overriding a valid layer, exception type MindSpore 2.10 raises, message pattern)
BAD_ARGUMENTS = [
    (dict(in_channels=3.0), TypeError, r"`in_channels` must be an int, but got 3.0 of type float"),
    (dict(in_channels=True), TypeError, r"`in_channels` must be an int, but got True of type bool"),
    (dict(out_channels="4"), TypeError, r"`out_channels` must be an int"),
    (dict(group=2.0), TypeError, r"`group` must be an int"),
    (dict(kernel_size=[2, 2]), TypeError, r"`kernel_size` must be an int or a tuple of 2 ints, but got \[2, 2\]"),
    (dict(kernel_size=2.0), TypeError, r"`kernel_size` must be an int or a tuple of 2 ints"),
    (dict(kernel_size=(2, 2.0)), TypeError, r"`kernel_size` must be an int or a tuple of 2 ints"),
    (dict(kernel_size=(2, 2, 2)), TypeError, r"`kernel_size` .* got \(2, 2, 2\) of length 3"),
    (dict(stride=[1, 1]), TypeError, r"`stride` must be an int or a tuple of 2 ints"),
    (dict(stride=(1, 1, 1)), TypeError, r"`stride` .* of length 3"),
    (dict(dilation=[1, 1]), TypeError, r"`dilation` must be an int or a tuple of 2 ints"),
    (dict(dilation=(1,)), TypeError, r"`dilation` .* of length 1"),
    (dict(pad_mode="pad", padding=[1, 1, 1, 1]), TypeError, r"`padding` must be an int or a tuple of 4 ints"),
    (dict(in_channels=0), ValueError, r"`in_channels` must be an int >= 1, but got 0"),
    (dict(out_channels=-1), ValueError, r"`out_channels` must be an int >= 1, but got -1"),
    (dict(kernel_size=0), ValueError, r"`kernel_size` must contain ints >= 1, but got 0"),
    (dict(kernel_size=(2, 0)), ValueError, r"`kernel_size` must contain ints >= 1, but got \(2, 0\)"),
    (dict(stride=0), ValueError, r"`stride` must contain ints >= 1"),
    (dict(dilation=0), ValueError, r"`dilation` must contain ints >= 1"),
    (dict(group=0), ValueError, r"`group` must be an int >= 1"),
    (dict(pad_mode="pad", padding=-1), ValueError, r"`padding` must be >= 0, but got -1"),
    (dict(pad_mode="pad", padding=(1, 1, -1, 1)), ValueError, r"`padding` must be >= 0"),
    (dict(pad_mode="SAME"), ValueError, r"`pad_mode` must be one of \['same', 'valid', 'pad'\], but got 'SAME'"),
    (dict(pad_mode=1), ValueError, r"`pad_mode` must be one of"),
    (dict(pad_mode="pad", padding=(1, 1)), ValueError,
     r"`padding` must be an int or a tuple of 4 ints \(top, bottom, left, right\), but got \(1, 1\) of length 2"),
    (dict(pad_mode="same", padding=1), ValueError, r"`padding` must be 0 when `pad_mode` is 'same'"),
    (dict(pad_mode="valid", padding=(0, 0, 1, 0)), ValueError, r"`padding` must be 0 when `pad_mode` is 'valid'"),
    (dict(in_channels=3, group=2), ValueError, r"`in_channels` \(=3\) must be divisible by `group` \(=2\)"),
    (dict(out_channels=3, group=2), ValueError, r"`out_channels` \(=3\) must be divisible by `group` \(=2\)"),
    (dict(has_bias=1), TypeError, r"`has_bias` must be a bool, but got 1"),
    (dict(weight_init="foo"), ValueError, r"`weight_init` 'foo' is not a known initializer; valid names .*normal"),
    (dict(has_bias=True, bias_init="bar"), ValueError, r"`bias_init` 'bar' is not a known initializer"),
    (dict(weight_init=np.ones((4, 2, 2, 2))), ValueError,
     r"`weight_init`: an array of shape \(4, 2, 2, 2\), but the parameter has shape \(2, 4, 2, 2\)"),
    (dict(has_bias=True, bias_init=np.ones(3)), ValueError, r"`bias_init`: an array of shape \(3,\)"),
    (dict(weight_init=True), TypeError, r"`weight_init` must be an initializer name"),
    (dict(weight_init=object()), TypeError, r"`weight_init` must be an initializer name"),
]


@pytest.mark.parametrize("overrides, error, message", BAD_ARGUMENTS)
def test_bad_argument_raises_at_construction(overrides, error, message):
  kwargs = dict(in_channels=2, out_channels=4, kernel_size=2) | overrides
  with pytest.raises(error, match=message):
    ct.Conv2dTranspose(**kwargs)


FUNCTION_ARGUMENTS = {"stride", "pad_mode", "padding", "dilation", "group"}


@pytest.mark.parametrize("overrides, error, message", [c for c in BAD_ARGUMENTS if set(c[0]) <= FUNCTION_ARGUMENTS])
def test_the_function_raises_the_same(overrides, error, message):
  kwargs = dict(stride=1, pad_mode="same", padding=0, dilation=1, group=1) | overrides
  with pytest.raises(error, match=message):
    ct.conv2d_transpose(jnp.ones((1, 2, 3, 3)), jnp.ones((2, 2, 2, 2)), **kwargs)


@pytest.mark.parametrize("padding", [0, (0, 0, 0, 0)])
def test_zero_padding_is_fine_with_any_mode(padding):
  ct.Conv2dTranspose(2, 4, 2, pad_mode="valid", padding=padding)


def test_nothing_is_coerced():
  layer = ct.Conv2dTranspose(2, 4, (3, 2), (2, 1), "pad", (1, 0, 0, 1))
  assert layer.kernel_size == (3, 2) and layer.padding == (1, 0, 0, 1)  # stored as given, MindSpore's form


def test_initializer_array_checked_before_any_call():
  with pytest.raises(ValueError, match="shape"):
    ct.Conv2dTranspose(2, 4, 2, weight_init=jnp.ones((2, 4, 3, 3)))


def test_call_time_channel_mismatch():
  layer = ct.Conv2dTranspose(2, 4, 2)
  with pytest.raises(ValueError, match=r"`x` has 3 channels"):
    layer.init(jax.random.key(0), jnp.ones((1, 3, 5, 5)))


def test_bias_init_is_only_read_with_a_bias():
  layer = ct.Conv2dTranspose(2, 4, 2, has_bias=False, bias_init="not-an-initializer")  # MindSpore ignores it too
  assert set(layer.init(jax.random.key(0), jnp.ones((1, 2, 3, 3)))["params"]) == {"weight"}
