"""The training examples run and learn."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parents[1] / "examples"


def _load(name: str):
    spec = importlib.util.spec_from_file_location(name, EXAMPLES / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_mps_sgd_example_learns_through_both_hooks() -> None:
    example = _load("mps_sgd")
    gpu = example.train(steps=30)
    cpu = example.train(steps=30, cpu_hook=True)
    assert gpu[-1] < 0.6 * gpu[0], gpu
    # Both hooks apply the same SGD step, so they follow the same path.
    assert cpu == pytest.approx(gpu, rel=1e-5)


def test_torch_autoencoder_example_learns() -> None:
    pytest.importorskip("torch")
    losses = _load("torch_autoencoder").train(steps=30)
    assert losses[-1] < 0.5 * losses[0], losses
