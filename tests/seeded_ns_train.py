"""`ns-train` with every process it starts seeded, for the tests' nerfacto runs.

nerfacto samples its training rays in a process of its own (nerfstudio's ParallelDataManager, started with spawn),
which nerfstudio does not seed, and torch seeds a fresh process at random: the same `ns-train nerfacto` command trains
a different model every time, and the edits that start from it differ. A spawned process runs the module-level code
of the script that started the run (as `__mp_main__`), so seeding here seeds that process too; nerfstudio then seeds
the training process itself from --machine.seed.
"""

import torch

torch.manual_seed(0)

if __name__ == "__main__":
    from nerfstudio.scripts.train import entrypoint

    entrypoint()
