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
    ConvolutionTransposeGradientState,
    DataType,
    Device,
    EdgeMode,
    GradientOption,
    ImageDescriptor,
    NeuronDescriptor,
    NeuronType,
    OptimizerSGD,
    PaddingMethod,
    QuantizationType,
    Region,
    WeightsAndBiasesState,
    built_device_kinds,
    cpu_kernel_isa,
    default_device,
    devices,
    get_num_threads,
    set_num_threads,
)
from .functional import (
    conv_transpose1d,
    conv_transpose1d_backward,
    conv_transpose2d,
    conv_transpose2d_backward,
)
from .layers import ConvTranspose1d, ConvTranspose2d
from .memory import empty_aligned
from .mps import ArrayDataSource, ConvolutionTranspose, DataSource, Image, Padding
from .training import ConvolutionTransposeGradient, apply_data_source_update

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
    "ConvolutionTransposeGradient",
    "ConvolutionTransposeGradientState",
    "DataSource",
    "DataType",
    "Device",
    "EdgeMode",
    "GradientOption",
    "Image",
    "ImageDescriptor",
    "NeuronDescriptor",
    "NeuronType",
    "OptimizerSGD",
    "Padding",
    "PaddingMethod",
    "QuantizationType",
    "Region",
    "WeightsAndBiasesState",
    "apply_data_source_update",
    "conv_transpose1d",
    "conv_transpose1d_backward",
    "conv_transpose2d",
    "conv_transpose2d_backward",
    "built_device_kinds",
    "cpu_kernel_isa",
    "default_device",
    "devices",
    "empty_aligned",
    "get_num_threads",
    "set_num_threads",
]
