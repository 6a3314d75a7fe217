"""`compile_model(..., mesh=...)` inside a process group the user started.

Run: `torchrun --nproc-per-node 2 examples/mesh_compile.py` (from the repository root).
Every rank plans gpt with the shard pass (deterministic, so all ranks agree), builds its own
local programs with TVM and runs them with the plan's collectives; each checks its output
against single-device eager.
"""

from __future__ import annotations

import torch
import torch.distributed as dist

from compiler import compile_model
from examples.zoo import gpt_layers


def main() -> None:
    dist.init_process_group("gloo")
    torch.set_num_threads(1)
    model, inputs = gpt_layers(2, batch=4)
    compiled = compile_model(model, inputs, mesh=dist.get_world_size(),
                             pipeline=f"shard{{mesh={dist.get_world_size()} solver=megatron}}")
    out = compiled(*inputs)
    ok = torch.allclose(out, model(*inputs), atol=1e-4, rtol=1e-4)
    print(f"rank {dist.get_rank()}: equals eager: {ok}; collectives {compiled.last_collectives}; "
          f"{compiled.build['local_programs']} local programs built by {compiled.build['backend']}", flush=True)
    dist.destroy_process_group()


if __name__ == "__main__":
    main()
