"""The shape arithmetic, table-tested: one row per branch, numbers MindSpore 2.10 printed."""

import pytest

import convtranspose as ct
from convtranspose import _shapes


@pytest.mark.parametrize(
    "kernel, stride, dilation, pad_mode, padding, expected",
    [
        (4, 2, 1, "same", (0, 0), (1, 1)),   # same, dk - s = 2: even split
        (5, 2, 1, "same", (0, 0), (1, 2)),   # same, dk - s = 3: the odd position goes to the high side
        (3, 2, 2, "same", (0, 0), (1, 2)),   # same, dilation: dk = 5
        (1, 3, 1, "same", (0, 0), (0, -2)),  # same, dk < s: nothing cropped, s - dk rows without input
        (3, 2, 1, "valid", (0, 0), (0, 0)),  # valid, dk >= s: full transposed convolution
        (2, 4, 1, "valid", (0, 0), (0, -2)),  # valid, dk < s: L * s rows, the last s - dk without input
        (3, 2, 1, "pad", (4, 1), (4, 1)),    # pad: the user's padding, even beyond dk - 1
    ],
)
def test_forward_padding(kernel, stride, dilation, pad_mode, padding, expected):
  assert _shapes.forward_padding(kernel, stride, dilation, pad_mode, padding) == expected


@pytest.mark.parametrize(
    "kernel, stride, dilation, padding, output_padding, expected",
    [
        (3, 2, 1, (1, 1), 1, (1, 0)),  # one row more at the high end: hi - op
        (3, 2, 1, (0, 0), 1, (0, -1)),  # beyond the full result: a row no input reaches
        (2, 1, 3, (0, 0), 2, (0, -2)),  # op < max(stride, dilation) = 3
    ],
)
def test_forward_padding_with_output_padding(kernel, stride, dilation, padding, output_padding, expected):
  assert _shapes.forward_padding(kernel, stride, dilation, "pad", padding, output_padding) == expected


@pytest.mark.parametrize(
    "input_shape, kernel, stride, pad_mode, padding, dilation, expected",
    [
        ((16, 50), 4, 1, "pad", 0, 1, (19, 53)),               # MindSpore's docstring example
        ((16, 50), 4, 1, "same", 0, 1, (16, 50)),              # same: L * s
        ((7, 5), (3, 2), (2, 3), "same", 0, 1, (14, 15)),      # same, per-dimension stride
        ((7,), 5, 2, "valid", 0, 1, (17,)),                     # valid: L * s + dk - s
        ((7,), 2, 4, "valid", 0, 1, (28,)),                     # valid with dk < s: L * s
        ((7,), 3, 2, "valid", 0, 3, (19,)),                     # valid with dilation: dk = 7
        ((7, 7), 3, 2, "pad", (1, 0, 2, 3), 1, (14, 10)),       # pad, asymmetric, MindSpore's order
        ((1,), 1, 1, "pad", (1, 0), 1, (0,)),                   # cropped to nothing: empty, not an error
        ((0, 3), 3, 2, "valid", 0, 1, (1, 7)),                  # empty input: rows only the bias reaches
    ],
)
def test_output_shape(input_shape, kernel, stride, pad_mode, padding, dilation, expected):
  assert ct.conv_transpose_output_shape(input_shape, kernel, stride, pad_mode, padding, dilation) == expected


@pytest.mark.parametrize(
    "input_shape, kernel, stride, padding, output_padding, expected",
    [
        ((8, 8, 8), 3, 2, 1, 1, (16, 16, 16)),            # (L - 1) * s + dk - 2p + op, PyTorch's formula
        ((8, 8, 8), 3, (1, 2, 3), 1, (0, 1, 2), (8, 16, 24)),
        ((5,), 4, 4, (0, 3), 3, (20,)),                     # asymmetric: L * s + dk - s - (0 + 3) + 3
    ],
)
def test_output_shape_with_output_padding(input_shape, kernel, stride, padding, output_padding, expected):
  assert ct.conv_transpose_output_shape(input_shape, kernel, stride, "pad", padding,
                                        output_padding=output_padding) == expected


@pytest.mark.parametrize(
    "length, kernel, stride, dilation, padding, out, expected",
    [
        # k4 s2 p1: taps at 0..3 -> (m, r) = (0, 0), (0, 1), (1, 0), (1, 1); two phases of K = 2 positions;
        # q0 = 1 // 2 = 0, Q = ceil((1 + 6) / 2) = 4, input padded (1, 4 - 3) = (1, 1), output from row 1.
        (3, 4, 2, 1, (1, 1), 6, (((0, 1), (1, 1), (0, 0), (1, 0)), 2, (1, 1), 4, 1)),
        # k3 s2 valid: phase 0 has taps 0 and 2, phase 1 tap 1 only (its other position holds a zero).
        (2, 3, 2, 1, (0, 0), 5, (((0, 1), (1, 1), (0, 0)), 2, (1, 1), 3, 0)),
        # stride 1, dilation 3: one phase, K = dk = 4, taps at its ends; output_padding 2 as hi = -2.
        (2, 2, 1, 3, (0, -2), 7, (((0, 3), (0, 0)), 4, (3, 5), 7, 0)),
        # dilation 2 shares the factor 2 with the stride: every tap in phase 0, phase 1 all zeros;
        # lo = 4 skips q0 = 2 phase rows, so the input is not padded at all.
        (5, 3, 2, 2, (4, 0), 5, (((0, 2), (0, 1), (0, 0)), 3, (0, 0), 3, 0)),
    ],
)
def test_phase_plan(length, kernel, stride, dilation, padding, out, expected):
  assert tuple(_shapes.phase_plan(length, kernel, stride, dilation, padding, out)) == expected


def test_lhs_dilated_padding_crops_when_padding_exceeds_the_kernel():
  assert _shapes.lhs_dilated_padding(3, 1, (4, 0)) == (-2, 2)
