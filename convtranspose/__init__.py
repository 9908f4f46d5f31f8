"""MindSpore's transposed-convolution layers, exact to the number, in JAX and Flax."""

from convtranspose import convert as convert
from convtranspose import initializers as initializers
from convtranspose import interop as interop
from convtranspose import sharding as sharding
from convtranspose.functional import conv1d_transpose as conv1d_transpose
from convtranspose.functional import conv2d_transpose as conv2d_transpose
from convtranspose.functional import conv3d_transpose as conv3d_transpose
from convtranspose.functional import conv_transpose as conv_transpose
from convtranspose.functional import conv_transpose_output_shape as conv_transpose_output_shape
from convtranspose.modules import Conv1dTranspose as Conv1dTranspose
from convtranspose.modules import Conv2dTranspose as Conv2dTranspose
from convtranspose.modules import Conv3dTranspose as Conv3dTranspose

__all__ = [
    "Conv1dTranspose",
    "Conv2dTranspose",
    "Conv3dTranspose",
    "conv1d_transpose",
    "conv2d_transpose",
    "conv3d_transpose",
    "conv_transpose",
    "conv_transpose_output_shape",
    "convert",
    "initializers",
    "interop",
    "sharding",
]
__version__ = "0.1.0"
