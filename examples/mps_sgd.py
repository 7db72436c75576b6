"""Trains one MPS-style ConvolutionTranspose with SGD through its data source's update hook.

The data source implements MPS's GPU-style hook (``update_with_command_buffer``: encode an
optimizer, return the new weights state) or, with ``--cpu-hook``, the CPU-style one
(``update_with_gradient_state``: update its own arrays, then the kernels reload from it).
``convt.apply_data_source_update`` drives the hook as MPSNNGraph would.

    python examples/mps_sgd.py [--cpu-hook] [--steps N]
"""

from __future__ import annotations

import argparse

import numpy as np

import convt


class TrainableSource(convt.DataSource):
    """Float32 OHWI weights that an optimizer updates."""

    def __init__(self, desc: convt.ConvolutionDescriptor, weights: np.ndarray, lr: float) -> None:
        super().__init__()
        self.desc, self.w = desc, weights
        self.b = np.zeros(desc.output_feature_channels, np.float32)
        self.lr = lr
        self.optimizer = convt.OptimizerSGD(learning_rate=lr)

    def descriptor(self):
        return self.desc

    def data_type(self):
        return convt.DataType.float32

    def kernel_weights_data_type(self):  # keep fp32 so that small SGD steps are not rounded away
        return convt.DataType.float32

    def weights(self):
        return self.w

    def bias_terms(self):
        return self.b

    def update_with_command_buffer(self, command_buffer, gradient_state, source_state):
        self.optimizer.encode(command_buffer, gradient_state, source_state)
        return source_state


class CpuHookSource(TrainableSource):
    """The CPU-style hook instead: update the arrays, return True to make the kernels reload."""

    update_with_command_buffer = None  # not offered

    def update_with_gradient_state(self, gradient_state, source_state) -> bool:
        self.w -= self.lr * gradient_state.gradient_for_weights
        self.b -= self.lr * gradient_state.gradient_for_biases
        return True


def train(steps: int = 60, cpu_hook: bool = False, seed: int = 0) -> list[float]:
    """Fits a 4 -> 3 channel, 3x3, stride-2 layer to a random target layer; returns the losses."""
    rng = np.random.default_rng(seed)
    device = convt.default_device()
    desc = convt.ConvolutionDescriptor(3, 3, 4, 3)
    desc.stride_in_pixels_x = desc.stride_in_pixels_y = 2
    target_w = rng.standard_normal((3, 3, 3, 4)).astype(np.float32) * 0.5
    target = convt.ConvolutionTranspose(
        device,
        convt.ArrayDataSource(desc, target_w, kernel_weights_data_type=convt.DataType.float32),
    )
    source = (CpuHookSource if cpu_hook else TrainableSource)(
        desc, rng.standard_normal((3, 3, 3, 4)).astype(np.float32) * 0.5, lr=0.5
    )
    kernel = convt.ConvolutionTranspose(device, source)
    gradient = convt.ConvolutionTransposeGradient(device, source)
    gradient.gradient_option = convt.GradientOption.weights_and_bias

    x = convt.Image(rng.standard_normal((8, 4, 6, 6)).astype(np.float32))
    cb = convt.CommandBuffer(device)
    want = target.encode(cb, x)
    cb.commit()
    cb.wait_until_completed()

    losses = []
    for _ in range(steps):
        cb = convt.CommandBuffer(device)
        y, state = kernel.encode(cb, x, destination_state=True)
        cb.commit()
        cb.wait_until_completed()
        diff = y.array - want.array
        losses.append(float(np.mean(diff**2)))
        cb = convt.CommandBuffer(device)
        gradient.encode(cb, convt.Image(2 * diff / diff.size), x, state)
        convt.apply_data_source_update(cb, kernel, state, gradient)
        if cb.status == "not_enqueued":  # the CPU-style path commits for itself
            cb.commit()
        cb.wait_until_completed()
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=60)
    parser.add_argument("--cpu-hook", action="store_true")
    args = parser.parse_args()
    losses = train(args.steps, args.cpu_hook)
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} after {len(losses)} SGD steps")


if __name__ == "__main__":
    main()
