"""The benchmark suite: transposed-convolution layers that matter (PyTorch conventions).

Spatial sizes are input sizes; k/s/p/op are kernel, stride, padding and output_padding.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Shape:
    name: str
    cin: int
    cout: int
    size: tuple[int, ...]  # input (H, W), or (L,) for 1-D
    k: int
    s: int
    p: int
    op: int = 0
    dilation: int = 1
    groups: int = 1

    def output_size(self) -> tuple[int, ...]:
        keff = self.dilation * (self.k - 1) + 1
        return tuple((n - 1) * self.s - 2 * self.p + keff + self.op for n in self.size)

    def macs(self, batch: int) -> int:
        """Multiply-adds of the scatter form: every input pixel meets every tap of its group."""
        taps = self.k ** len(self.size)
        pixels = 1
        for n in self.size:
            pixels *= n
        return batch * self.cin * pixels * (self.cout // self.groups) * taps


SUITE = [
    Shape("dcgan_g2", 512, 256, (8, 8), 4, 2, 1),
    Shape("dcgan_out", 128, 3, (32, 32), 4, 2, 1),
    Shape("unet_up1", 256, 128, (64, 64), 2, 2, 0),
    Shape("unet_up2", 64, 32, (128, 128), 2, 2, 0),
    Shape("fsrcnn_x3", 56, 1, (128, 128), 9, 3, 4, 2),
    Shape("fcn8s_up8", 21, 21, (32, 32), 16, 8, 4),
    Shape("vae_dec", 128, 64, (32, 32), 3, 2, 1, 1),
    Shape("dw_k4s2", 64, 64, (64, 64), 4, 2, 1, groups=64),
    Shape("grp4_k4s2", 64, 64, (64, 64), 4, 2, 1, groups=4),
    Shape("s1_same", 64, 64, (56, 56), 3, 1, 1),
    Shape("dil2", 32, 32, (64, 64), 3, 1, 2, dilation=2),
    Shape("hifigan_up1", 512, 256, (128,), 16, 8, 4),
]
