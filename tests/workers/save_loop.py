"""Child process for test_reliability_checkpoints: save a checkpoint over and over until killed.

    python save_loop.py PATH MEGABYTES

Saves {"version": i, "payload": a float32 tensor of MEGABYTES MB filled with i} to PATH with
`optimizers.checkpoint.save_atomic`, for i = 0, 1, 2, ..., printing "saved i" after each. The
parent kills it with SIGKILL at a random moment, most likely in the middle of a save.
"""

import sys

import torch

from optimizers.checkpoint import save_atomic

path, megabytes = sys.argv[1], int(sys.argv[2])
payload = torch.empty(megabytes * 2**18)
version = 0
while True:
    payload.fill_(version)
    save_atomic({"version": version, "payload": payload}, path)
    print(f"saved {version}", flush=True)
    version += 1
