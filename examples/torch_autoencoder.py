"""Trains a tiny convolutional autoencoder whose decoder is convt.torch.ConvTranspose2d.

    python examples/torch_autoencoder.py [--steps N]
"""

from __future__ import annotations

import argparse

import torch

import convt.torch as ct


def make_model() -> torch.nn.Module:
    return torch.nn.Sequential(
        torch.nn.Conv2d(3, 8, 3, stride=2, padding=1),  # 16x16 -> 8x8
        torch.nn.ReLU(),
        torch.nn.Conv2d(8, 16, 3, stride=2, padding=1),  # 8x8 -> 4x4
        torch.nn.ReLU(),
        ct.ConvTranspose2d(16, 8, 4, stride=2, padding=1),  # 4x4 -> 8x8
        torch.nn.ReLU(),
        ct.ConvTranspose2d(8, 3, 4, stride=2, padding=1),  # 8x8 -> 16x16
    )


def train(steps: int = 40, seed: int = 0) -> list[float]:
    """Adam on a fixed batch of random images; returns the reconstruction losses."""
    torch.manual_seed(seed)
    model = make_model()
    data = torch.rand(16, 3, 16, 16)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    losses = []
    for _ in range(steps):
        opt.zero_grad()
        loss = torch.nn.functional.mse_loss(model(data), data)
        loss.backward()
        opt.step()
        losses.append(loss.item())
    return losses


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    losses = train(parser.parse_args().steps)
    print(f"loss {losses[0]:.4f} -> {losses[-1]:.4f} after {len(losses)} Adam steps")


if __name__ == "__main__":
    main()
