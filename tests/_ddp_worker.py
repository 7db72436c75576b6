"""Worker process of the DistributedDataParallel test in test_torch_module.py (kept out of the
test module so that spawned processes import nothing from pytest)."""

from __future__ import annotations

import os
import sys
from typing import Any

LAYER_ARGS = {
    "in_channels": 4,
    "out_channels": 6,
    "kernel_size": 3,
    "stride": 2,
    "padding": 1,
    "output_padding": 1,
    "groups": 2,
}
LEARNING_RATE = 0.1


def run(rank: int, world: int, port: int, out_dir: str, data: dict[str, Any]) -> None:
    """One DDP rank: a convt.torch.ConvTranspose2d in DistributedDataParallel, one SGD step on
    this rank's slice of the batch; saves the gradients and the updated parameters."""
    import convt.torch as ctorch
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group(
        "gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world
    )
    finished = False
    try:
        layer = ctorch.ConvTranspose2d(**LAYER_ARGS)
        layer.load_state_dict(data["state"])
        model = torch.nn.parallel.DistributedDataParallel(layer)
        opt = torch.optim.SGD(model.parameters(), lr=LEARNING_RATE)
        per_rank = data["x"].shape[0] // world
        part = slice(rank * per_rank, (rank + 1) * per_rank)
        opt.zero_grad()
        loss = ((model(data["x"][part]) - data["target"][part]) ** 2).mean()
        loss.backward()
        grads = {name: p.grad.detach().clone() for name, p in layer.named_parameters()}
        opt.step()
        params = {name: p.detach().clone() for name, p in layer.named_parameters()}
        torch.save({"grads": grads, "params": params}, f"{out_dir}/rank{rank}.pt")
        dist.barrier()  # no rank tears the group down while the other still talks to it
        finished = True
    finally:
        dist.destroy_process_group()
    if finished:
        # The results are on disk for the parent to check. Skip interpreter teardown: in CI a
        # rank twice aborted there ("terminate called without an active exception", seen only
        # in full-suite runs, cause not found), after its work was done.
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)
