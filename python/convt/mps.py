"""MPS-style classes: Image, Padding, DataSource, ArrayDataSource, ConvolutionTranspose."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from . import _args, _core
from ._core import (
    CommandBuffer,
    ConvolutionDescriptor,
    ConvolutionGradientState,
    ConvolutionTransposeGradientState,
    DataType,
    Device,
    ImageDescriptor,
    PaddingMethod,
    QuantizationType,
)
from .memory import empty_aligned
from .serialization import Serializable

DataSource = _core.DataSource

_LAYOUT_AXES = {"NCHW": (0, 1, 2, 3), "NHWC": (0, 3, 1, 2)}  # positions of N, C, H, W


class Image:
    """MPSImage analogue over a 4-D numpy array, never copied.

    ``layout`` "NCHW" means the array's axes are (images, channels, height, width); "NHWC" means
    (images, height, width, channels). Any strides are accepted; float32 or float16.
    ``copy=False`` forbids a device from staging (copying) the array: Metal then needs it
    page-aligned (``convt.empty_aligned``) and raises ValueError otherwise.
    """

    def __init__(self, array: np.ndarray, layout: str = "NCHW", *, copy: bool = True) -> None:
        if not isinstance(array, np.ndarray):
            raise TypeError(f"array must be a numpy.ndarray, got {type(array).__name__}")
        if layout not in _LAYOUT_AXES:
            raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
        if array.ndim != 4:
            raise ValueError(f"array must be 4-D ({layout}), got {array.ndim}-D")
        if array.dtype not in (np.float32, np.float16):
            raise TypeError(f"array dtype must be float32 or float16, got {array.dtype}")
        self.array = array
        self.layout = layout
        self.copy = bool(copy)

    @classmethod
    def empty(
        cls,
        number_of_images: int,
        feature_channels: int,
        height: int,
        width: int,
        dtype: np.dtype = np.float32,
        layout: str = "NCHW",
        *,
        copy: bool = True,
    ) -> Image:
        """An uninitialised image of the given size (pixels) and dtype; page-aligned when
        ``copy=False``."""
        nchw = (number_of_images, feature_channels, height, width)
        if layout not in _LAYOUT_AXES:
            raise ValueError(f"layout must be 'NCHW' or 'NHWC', got {layout!r}")
        shape = tuple(nchw[i] for i in np.argsort(_LAYOUT_AXES[layout]))
        array = np.empty(shape, dtype=dtype) if copy else empty_aligned(shape, dtype)
        return cls(array, layout, copy=copy)

    def _dim(self, which: int) -> int:
        return int(self.array.shape[_LAYOUT_AXES[self.layout][which]])

    @property
    def number_of_images(self) -> int:
        return self._dim(0)

    @property
    def feature_channels(self) -> int:
        return self._dim(1)

    @property
    def height(self) -> int:
        return self._dim(2)

    @property
    def width(self) -> int:
        return self._dim(3)

    @property
    def dtype(self) -> np.dtype:
        return self.array.dtype

    def __repr__(self) -> str:
        return (
            f"Image({self.number_of_images} x {self.feature_channels} x {self.height} x "
            f"{self.width}, {self.dtype}, {self.layout})"
        )


class Padding:
    """MPSNNPadding analogue: ``padding_method`` bits from ``PaddingMethod``.

    With the ``PaddingMethod.CUSTOM`` bit set, ``destination_image_descriptor(descriptor)`` runs
    after the built-in sizing and may edit the ``ImageDescriptor`` in place (size, offsets).
    """

    def __init__(self, method: int = PaddingMethod.DEFAULT) -> None:
        if not isinstance(method, int) or isinstance(method, bool):
            raise TypeError(f"method must be an int of PaddingMethod bits, got {method!r}")
        if not 0 <= method < 2**32:
            raise ValueError(f"method must be 32 bits of PaddingMethod flags, got {method!r}")
        self.padding_method = method

    def destination_image_descriptor(self, descriptor: ImageDescriptor) -> None:
        """Custom sizing hook; the default changes nothing."""

    def __repr__(self) -> str:
        return f"Padding(0x{self.padding_method:x})"


class ArrayDataSource(DataSource):
    """A DataSource over numpy arrays.

    ``weights``: OHWI ``[output_feature_channels, kH, kW, input_feature_channels / groups]``,
    float32, float16 or uint8 (uint8 needs ``quantization`` and ``ranges`` (float32[O, 2] of
    (min, max)) or ``lookup_table`` (float32[256])). ``bias``: float32[O] or None.
    """

    def __init__(
        self,
        descriptor: ConvolutionDescriptor,
        weights: np.ndarray,
        bias: np.ndarray | None = None,
        *,
        kernel_weights_data_type: DataType = DataType.float16,
        quantization: QuantizationType = QuantizationType.none,
        ranges: np.ndarray | None = None,
        lookup_table: np.ndarray | None = None,
        label: str = "",
    ) -> None:
        super().__init__()
        if not isinstance(descriptor, ConvolutionDescriptor):
            raise TypeError(
                f"descriptor must be a ConvolutionDescriptor, got {type(descriptor).__name__}"
            )
        if not isinstance(weights, np.ndarray):
            raise TypeError(f"weights must be a numpy.ndarray, got {type(weights).__name__}")
        types = {
            np.float32: DataType.float32,
            np.float16: DataType.float16,
            np.uint8: DataType.uint8,
        }
        if weights.dtype.type not in types:
            raise TypeError(f"weights dtype must be float32, float16 or uint8, got {weights.dtype}")
        self._descriptor = descriptor
        self._weights = weights
        self._data_type = types[weights.dtype.type]
        self._bias = bias
        self._kernel_type = kernel_weights_data_type
        self._quantization = quantization
        self._ranges = ranges
        self._lut = lookup_table
        self._label = label

    def descriptor(self) -> ConvolutionDescriptor:
        return self._descriptor

    def data_type(self) -> DataType:
        return self._data_type

    def weights(self) -> np.ndarray:
        return self._weights

    def bias_terms(self) -> np.ndarray | None:
        return self._bias

    def label(self) -> str:
        return self._label

    def kernel_weights_data_type(self) -> DataType:
        return self._kernel_type

    def weights_quantization_type(self) -> QuantizationType:
        return self._quantization

    def ranges_for_uint8_kernel(self) -> np.ndarray | None:
        return self._ranges

    def lookup_table_for_uint8_kernel(self) -> np.ndarray | None:
        return self._lut


class ConvolutionTranspose(Serializable, _core._ConvolutionTranspose):
    """MPSCNNConvolutionTranspose: weights are loaded and prepared once from ``data_source``.

    Properties follow MPS in snake_case (``kernel_offset_x``, ``offset``, ``clip_rect``,
    ``accumulator_precision``, channel offsets, ...). Differences from MPS: channel offsets and
    channels per group need not be multiples of 4; ``edge_mode`` clamp is rejected.
    """

    _core_class = _core._ConvolutionTranspose

    def __init__(self, device: Device, data_source: DataSource) -> None:
        if not isinstance(device, Device):
            raise TypeError(f"device must be a convt.Device, got {type(device).__name__}")
        if not isinstance(data_source, DataSource):
            raise TypeError(
                f"data_source must be a convt.DataSource, got {type(data_source).__name__}"
            )
        super().__init__(device, data_source)
        self._data_source = data_source  # the Python object must outlive the kernel
        self._padding = Padding()

    @property
    def data_source(self) -> DataSource:
        return self._data_source

    def _after_load(self) -> None:
        self._padding = Padding(self._padding_method)

    def _pickled_extras(self) -> dict:
        # A custom padding hook is Python code: pickle carries it, to_bytes() keeps only the bits.
        return {"padding": self._padding}

    @property
    def padding(self) -> Padding:
        return self._padding

    @padding.setter
    def padding(self, padding: Padding) -> None:
        if not isinstance(padding, Padding):
            raise TypeError(f"padding must be a convt.Padding, got {type(padding).__name__}")
        hook = None
        if padding.padding_method & PaddingMethod.CUSTOM:
            hook = padding.destination_image_descriptor
        self._set_padding(padding.padding_method, hook)
        self._padding = padding

    def destination_image_descriptor(
        self,
        source_image: Image,
        convolution_gradient_state: ConvolutionGradientState | None = None,
    ) -> ImageDescriptor:
        """Auto-sizing; also writes ``offset`` and ``kernel_offset_x/y`` onto this kernel."""
        _check_image("source_image", source_image)
        _check_state(convolution_gradient_state)
        return self._destination_image_descriptor(
            source_image.array, source_image.layout, convolution_gradient_state
        )

    def encode(
        self,
        command_buffer: CommandBuffer,
        source_image: Image,
        convolution_gradient_state: ConvolutionGradientState | None = None,
        destination_image: Image | None = None,
        *,
        destination_state: bool = False,
        destination_state_is_temporary: bool = False,
    ) -> Image | tuple[Image, ConvolutionTransposeGradientState]:
        """Encodes one transposed convolution.

        Without ``destination_image``: auto-sizes (padding policy, then the gradient state, then a
        custom hook), writes the placement back onto this kernel and returns a new Image with the
        source's dtype and layout. With it: uses the stored offset, kernel offsets and clip rect and
        writes into ``destination_image`` in place (returned).

        With ``destination_state=True`` (training) it returns ``(image, state)``, the state being
        ``result_state`` (or ``temporary_result_state`` when ``destination_state_is_temporary``)
        for this encode's geometry.
        """
        _check_command_buffer(command_buffer)
        _check_image("source_image", source_image)
        if destination_image is None:
            d = self.destination_image_descriptor(source_image, convolution_gradient_state)
            destination_image = Image.empty(
                d.number_of_images,
                d.feature_channels,
                d.height,
                d.width,
                source_image.dtype,
                source_image.layout,
                copy=source_image.copy,
            )
        else:
            _check_image("destination_image", destination_image)
            _check_state(convolution_gradient_state)
        state = None
        if destination_state:
            state = self._make_state(
                source_image,
                convolution_gradient_state,
                destination_image,
                command_buffer if destination_state_is_temporary else None,
            )
        self._encode(
            command_buffer,
            source_image.array,
            source_image.layout,
            destination_image.array,
            destination_image.layout,
            source_image.copy and destination_image.copy,
        )
        return (destination_image, state) if destination_state else destination_image

    def result_state(
        self,
        source_image: Image,
        convolution_gradient_state: ConvolutionGradientState | None = None,
        *,
        destination_image: Image,
    ) -> ConvolutionTransposeGradientState:
        """A gradient state with this kernel's current geometry for these images (lasting)."""
        return self._make_state(source_image, convolution_gradient_state, destination_image, None)

    def temporary_result_state(
        self,
        command_buffer: CommandBuffer,
        source_image: Image,
        convolution_gradient_state: ConvolutionGradientState | None = None,
        *,
        destination_image: Image,
    ) -> ConvolutionTransposeGradientState:
        """Like ``result_state``, valid only until ``command_buffer`` completes."""
        _check_command_buffer(command_buffer)
        return self._make_state(
            source_image, convolution_gradient_state, destination_image, command_buffer
        )

    def result_state_batch(
        self,
        source_images: Sequence[Image],
        convolution_gradient_states: Sequence[ConvolutionGradientState | None] | None = None,
        *,
        destination_images: Sequence[Image],
    ) -> list[ConvolutionTransposeGradientState]:
        """One state shared by the batch, repeated once per image (MPS's batch rule)."""
        return self._batch_state(
            source_images, convolution_gradient_states, destination_images, None
        )

    def temporary_result_state_batch(
        self,
        command_buffer: CommandBuffer,
        source_images: Sequence[Image],
        convolution_gradient_states: Sequence[ConvolutionGradientState | None] | None = None,
        *,
        destination_images: Sequence[Image],
    ) -> list[ConvolutionTransposeGradientState]:
        """``result_state_batch`` valid only until ``command_buffer`` completes."""
        _check_command_buffer(command_buffer)
        return self._batch_state(
            source_images, convolution_gradient_states, destination_images, command_buffer
        )

    def _batch_state(self, sources, states, destinations, command_buffer):
        if len(sources) == 0:
            raise ValueError("source_images must not be empty")
        if len(destinations) != len(sources):
            raise ValueError(
                f"destination_images must have one entry per source image ({len(sources)}), "
                f"got {len(destinations)}"
            )
        first = None if states is None else states[0]
        state = self._make_state(sources[0], first, destinations[0], command_buffer)
        return [state] * len(sources)

    def _make_state(self, source_image, convolution_state, destination_image, command_buffer):
        _check_image("source_image", source_image)
        _check_image("destination_image", destination_image)
        _check_state(convolution_state)
        state = self._result_state(
            source_image.array,
            source_image.layout,
            destination_image.array,
            destination_image.layout,
            convolution_state,
            command_buffer,
        )
        state.convolution_transpose = self
        return state

    def encode_batch(
        self,
        command_buffer: CommandBuffer,
        source_images: Sequence[Image],
        convolution_gradient_states: Sequence[ConvolutionGradientState | None] | None = None,
        destination_images: Sequence[Image] | None = None,
        *,
        destination_states: bool = False,
        destination_state_is_temporary: bool = False,
    ) -> list[Image] | tuple[list[Image], list[ConvolutionTransposeGradientState]]:
        """``encode`` for each image of a batch, with the same geometry.

        With ``destination_states=True`` it returns ``(images, states)``; the states are one
        object shared by the batch, so a gradient kernel sums dW/dB over its images.
        """
        n = len(source_images)
        states = (
            list(convolution_gradient_states)
            if convolution_gradient_states is not None
            else [None] * n
        )
        dests = list(destination_images) if destination_images is not None else [None] * n
        if len(states) != n:
            raise ValueError(
                "convolution_gradient_states must have one entry per source image "
                f"({n}), got {len(states)}"
            )
        if len(dests) != n:
            raise ValueError(
                f"destination_images must have one entry per source image ({n}), got {len(dests)}"
            )
        if destination_images is None:
            for i, image in enumerate(source_images):
                _check_image(f"source_images[{i}]", image)
                if image.number_of_images != 1:
                    raise ValueError(
                        f"source_images[{i}].number_of_images must be 1 for auto-sizing batch "
                        f"encodes, got {image.number_of_images}"
                    )
        images = [
            self.encode(command_buffer, src, state, dst)
            for src, state, dst in zip(source_images, states, dests)
        ]
        if not destination_states:
            return images
        cb = command_buffer if destination_state_is_temporary else None
        return images, self._batch_state(source_images, states, images, cb)


def _check_image(name: str, image: object) -> None:
    if not isinstance(image, Image):
        raise TypeError(f"{name} must be a convt.Image, got {type(image).__name__}")


def _check_state(state: object) -> None:
    if state is not None and not isinstance(state, ConvolutionGradientState):
        raise TypeError(
            "convolution_gradient_state must be a convt.ConvolutionGradientState or None, "
            f"got {type(state).__name__}"
        )


def _check_command_buffer(command_buffer: object) -> None:
    if not isinstance(command_buffer, CommandBuffer):
        raise TypeError(
            f"command_buffer must be a convt.CommandBuffer, got {type(command_buffer).__name__}"
        )


_INT = "an int in [-2^63, 2^63)"
_args.name_setter_errors(
    _core._ConvolutionTranspose,
    {
        "kernel_offset_x": _INT,
        "kernel_offset_y": _INT,
        "offset": "a tuple (x, y, z) of ints",
        "clip_rect": "a convt.Region",
        "edge_mode": "a convt.EdgeMode",
        "accumulator_precision": "a convt.AccumulatorPrecision",
        "source_feature_channel_offset": _INT,
        "source_feature_channel_max_count": _INT,
        "destination_feature_channel_offset": _INT,
        "label": "a str",
    },
)
_args.name_setter_errors(
    ConvolutionDescriptor,
    {
        name: _INT
        for name in (
            "kernel_width",
            "kernel_height",
            "input_feature_channels",
            "output_feature_channels",
            "stride_in_pixels_x",
            "stride_in_pixels_y",
            "dilation_rate_x",
            "dilation_rate_y",
            "groups",
        )
    }
    | {"fused_neuron_descriptor": "a convt.NeuronDescriptor or None"},
)
_args.name_setter_errors(
    _core.NeuronDescriptor,
    {"type": "a convt.NeuronType", "a": "a float", "b": "a float", "c": "a float"},
)
