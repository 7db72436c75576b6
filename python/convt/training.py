"""MPS-style training path: the gradient kernel and the data-source update driver."""

from __future__ import annotations

from collections.abc import Sequence

from . import _args, _core
from ._core import (
    CommandBuffer,
    ConvolutionTransposeGradientState,
    Device,
    GradientOption,
    WeightsAndBiasesState,
)
from .mps import (
    ConvolutionTranspose,
    DataSource,
    Image,
    _check_command_buffer,
    _check_image,
)
from .serialization import Serializable


class ConvolutionTransposeGradient(Serializable, _core._ConvolutionTransposeGradient):
    """MPSCNNConvolutionTransposeGradient: dX, dW and dB of a ConvolutionTranspose (spec 5.3).

    Built from the same data source as the forward kernel; it keeps its own copy of the weights
    (reload both after an update). uint8 weights are rejected, as in MPS.
    """

    _core_class = _core._ConvolutionTransposeGradient

    def __init__(self, device: Device, data_source: DataSource) -> None:
        if not isinstance(device, Device):
            raise TypeError(f"device must be a convt.Device, got {type(device).__name__}")
        if not isinstance(data_source, DataSource):
            raise TypeError(
                f"data_source must be a convt.DataSource, got {type(data_source).__name__}"
            )
        super().__init__(device, data_source)
        self._data_source = data_source

    @property
    def data_source(self) -> DataSource:
        return self._data_source

    def encode(
        self,
        command_buffer: CommandBuffer,
        source_gradient: Image,
        source_image: Image,
        gradient_state: ConvolutionTransposeGradientState,
        destination_gradient: Image | None = None,
    ) -> Image | None:
        """Encodes the gradients of one forward encode.

        ``source_gradient`` is dL/d(forward destination), ``source_image`` the forward source X.
        dW and dB (float32, OHWI) go into ``gradient_state`` when ``gradient_option`` includes
        weights_and_bias. dX (shaped like X) is returned when it includes data, written into
        ``destination_gradient`` or into a new Image with X's dtype and layout; otherwise None.
        """
        return self._encode_one(
            command_buffer,
            source_gradient,
            source_image,
            gradient_state,
            destination_gradient,
            False,
        )

    def encode_batch(
        self,
        command_buffer: CommandBuffer,
        source_gradients: Sequence[Image],
        source_images: Sequence[Image],
        gradient_states: Sequence[ConvolutionTransposeGradientState],
        destination_gradients: Sequence[Image] | None = None,
    ) -> list[Image | None]:
        """``encode`` per image; images sharing one state have their dW/dB summed."""
        n = len(source_gradients)
        dests = list(destination_gradients) if destination_gradients is not None else [None] * n
        for name, seq in (
            ("source_images", source_images),
            ("gradient_states", gradient_states),
            ("destination_gradients", dests),
        ):
            if len(seq) != n:
                raise ValueError(
                    f"{name} must have one entry per source gradient ({n}), got {len(seq)}"
                )
        seen: list[int] = []
        results = []
        for dy, x, state, dx in zip(source_gradients, source_images, gradient_states, dests):
            results.append(self._encode_one(command_buffer, dy, x, state, dx, id(state) in seen))
            seen.append(id(state))
        return results

    def _encode_one(self, command_buffer, dy, x, state, dx, accumulate):
        _check_command_buffer(command_buffer)
        _check_image("source_gradient", dy)
        _check_image("source_image", x)
        if not isinstance(state, ConvolutionTransposeGradientState):
            raise TypeError(
                "gradient_state must be a convt.ConvolutionTransposeGradientState, "
                f"got {type(state).__name__}"
            )
        wants_data = self.gradient_option in (GradientOption.data, GradientOption.all)
        if dx is None and wants_data:
            dx = Image.empty(
                x.number_of_images, x.feature_channels, x.height, x.width, x.dtype, x.layout
            )
        elif dx is not None:
            _check_image("destination_gradient", dx)
        self._encode(
            command_buffer,
            dy.array,
            dy.layout,
            x.array,
            x.layout,
            state,
            None if dx is None or not wants_data else dx.array,
            "NCHW" if dx is None else dx.layout,
            accumulate,
        )
        return dx if wants_data else None


def apply_data_source_update(
    command_buffer: CommandBuffer,
    kernel: ConvolutionTranspose,
    gradient_state: ConvolutionTransposeGradientState,
    gradient_kernel: ConvolutionTransposeGradient | None = None,
) -> bool:
    """Runs the data source's update hook the way MPSNNGraph does; returns whether it updated.

    ``source_state = kernel.export_weights_and_biases(command_buffer)`` holds the current weights.
    GPU-style first: ``update_with_command_buffer(command_buffer, gradient_state, source_state)``;
    a returned WeightsAndBiasesState is reloaded into ``kernel`` (and ``gradient_kernel``). If it
    returns None, or is absent, the CPU-style ``update_with_gradient_state(gradient_state,
    source_state)`` runs if present: the command buffer is committed and waited first (the hook
    reads the gradients on the CPU), and if it returns True both kernels reload from the data
    source. A data source with neither hook is left as it is.
    """
    _check_command_buffer(command_buffer)
    source = kernel.data_source
    kernels = [k for k in (kernel, gradient_kernel) if k is not None]
    gpu_hook = getattr(source, "update_with_command_buffer", None)
    cpu_hook = getattr(source, "update_with_gradient_state", None)
    if gpu_hook is None and cpu_hook is None:
        return False  # a data source without hooks is not trained, as in MPSNNGraph
    source_state = kernel.export_weights_and_biases(command_buffer)
    if gpu_hook is not None:
        new_state = gpu_hook(command_buffer, gradient_state, source_state)
        if new_state is not None:
            if not isinstance(new_state, WeightsAndBiasesState):
                raise TypeError(
                    "update_with_command_buffer must return a WeightsAndBiasesState or None, "
                    f"got {type(new_state).__name__}"
                )
            for k in kernels:
                k.reload_weights_and_biases(command_buffer, new_state)
            return True
    if cpu_hook is None:
        return False
    command_buffer.commit()
    command_buffer.wait_until_completed()
    if not cpu_hook(gradient_state, source_state):
        return False
    for k in kernels:
        k.reload_weights_and_biases_from_data_source()
    return True


_args.name_setter_errors(
    _core._ConvolutionTransposeGradient, {"gradient_option": "a convt.GradientOption"}
)
