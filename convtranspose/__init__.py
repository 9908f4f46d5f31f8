"""MindSpore's transposed-convolution layers, exact to the number, in JAX and Flax."""

from convtranspose import convert as convert
from convtranspose import initializers as initializers
from convtranspose import interop as interop
from convtranspose import nnx as nnx
from convtranspose import sharding as sharding
from convtranspose import tuning as tuning
from convtranspose.functional import conv1d_transpose as conv1d_transpose
from convtranspose.functional import conv2d_transpose as conv2d_transpose
from convtranspose.functional import conv3d_transpose as conv3d_transpose
from convtranspose.functional import conv_transpose as conv_transpose
from convtranspose.functional import conv_transpose1d as conv_transpose1d
from convtranspose.functional import conv_transpose2d as conv_transpose2d
from convtranspose.functional import conv_transpose3d as conv_transpose3d
from convtranspose.functional import conv_transpose_output_shape as conv_transpose_output_shape
from convtranspose.modules import Conv1dTranspose as Conv1dTranspose
from convtranspose.modules import Conv2dTranspose as Conv2dTranspose
from convtranspose.modules import Conv3dTranspose as Conv3dTranspose
from convtranspose.modules import ConvTranspose1d as ConvTranspose1d
from convtranspose.modules import ConvTranspose2d as ConvTranspose2d
from convtranspose.modules import ConvTranspose3d as ConvTranspose3d
from convtranspose.tuning import Tuning as Tuning
from convtranspose.tuning import autotune as autotune
from convtranspose.tuning import tune_on_miss as tune_on_miss
from convtranspose.tuning import use_tuning as use_tuning

__all__ = [
    "Conv1dTranspose",
    "Conv2dTranspose",
    "Conv3dTranspose",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvTranspose3d",
    "Tuning",
    "autotune",
    "conv1d_transpose",
    "conv2d_transpose",
    "conv3d_transpose",
    "conv_transpose",
    "conv_transpose1d",
    "conv_transpose2d",
    "conv_transpose3d",
    "conv_transpose_output_shape",
    "convert",
    "initializers",
    "interop",
    "nnx",
    "sharding",
    "tune_on_miss",
    "tuning",
    "use_tuning",
]
__version__ = "0.1.0"
