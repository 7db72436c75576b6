"""convt: transposed convolution with the semantics of Apple's MPSCNNConvolutionTranspose.

Two ways in:

* the MPS-style API (``ConvolutionTranspose``, ``ConvolutionDescriptor``, ``DataSource``,
  ``Image``, ``CommandBuffer``), faithful to Metal Performance Shaders' sizing, offsets and
  weight layout (OHWI, unrotated);
* the PyTorch-convention API (``conv_transpose1d``, ``conv_transpose2d``, ``ConvTranspose1d``,
  ``ConvTranspose2d``), with PyTorch's weight layout and results.

Arrays are numpy arrays, read and written in place.
"""

from ._core import (
    AccumulatorPrecision,
    CommandBuffer,
    ConvolutionDescriptor,
    ConvolutionGradientState,
    DataType,
    Device,
    EdgeMode,
    ImageDescriptor,
    NeuronDescriptor,
    NeuronType,
    PaddingMethod,
    QuantizationType,
    Region,
    default_device,
    devices,
    get_num_threads,
    set_num_threads,
)
from .functional import conv_transpose1d, conv_transpose2d
from .layers import ConvTranspose1d, ConvTranspose2d
from .mps import ArrayDataSource, ConvolutionTranspose, DataSource, Image, Padding

__version__ = "0.1.0"

__all__ = [
    "AccumulatorPrecision",
    "ArrayDataSource",
    "CommandBuffer",
    "ConvTranspose1d",
    "ConvTranspose2d",
    "ConvolutionDescriptor",
    "ConvolutionGradientState",
    "ConvolutionTranspose",
    "DataSource",
    "DataType",
    "Device",
    "EdgeMode",
    "Image",
    "ImageDescriptor",
    "NeuronDescriptor",
    "NeuronType",
    "Padding",
    "PaddingMethod",
    "QuantizationType",
    "Region",
    "conv_transpose1d",
    "conv_transpose2d",
    "default_device",
    "devices",
    "get_num_threads",
    "set_num_threads",
]
