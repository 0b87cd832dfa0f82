"""Child process for test_reliability_checkpoints: train, checkpoint, get killed, resume.

    python kill_resume.py DIR STEPS EVERY MODE

Trains one tiny model per smallstate optimizer (contract-case settings) for STEPS steps; the
batch of step s is drawn from a generator seeded with s, so a resumed run sees the same data.
Every EVERY steps it writes DIR/ckpt-<step>.pt atomically (temporary file, then os.replace),
holding model and optimizer state dicts. MODE:
- "full": never stops; writes DIR/final.pt.
- "killable": after its first checkpoint it prints "ready" and slows down (sleeps between steps)
  so that the parent's SIGKILL lands mid-training.
- "resume": loads the newest checkpoint (weights_only=True), continues to STEPS, writes final.pt.
One thread everywhere, so runs are bit-reproducible.
"""

import os
import sys
import time
from pathlib import Path

import numba
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from contract.cases import CASES, tiny_model  # noqa: E402

NAMES = ("microadam", "ldadam", "adapprox")


def batch(step: int):
    generator = torch.Generator().manual_seed(1000 + step)
    x = torch.randn(32, 64, generator=generator)
    return x, torch.sin(x[:, :3].sum(dim=1, keepdim=True))


def main() -> None:
    directory, steps, every, mode = (
        Path(sys.argv[1]),
        int(sys.argv[2]),
        int(sys.argv[3]),
        sys.argv[4],
    )
    torch.set_num_threads(1)
    numba.set_num_threads(1)
    models = {name: tiny_model(seed=7) for name in NAMES}
    opts = {name: CASES[name](models[name].parameters(), lr=1e-2) for name in NAMES}
    start = 0
    if mode == "resume":
        newest = max(directory.glob("ckpt-*.pt"), key=lambda p: int(p.stem.split("-")[1]))
        saved = torch.load(newest, weights_only=True)
        for name in NAMES:
            models[name].load_state_dict(saved[name]["model"])
            opts[name].load_state_dict(saved[name]["opt"])
        start = saved["step"]
        print(f"resumed from {start}", flush=True)
    for step in range(start, steps):
        x, y = batch(step)
        for name in NAMES:
            opts[name].zero_grad(set_to_none=True)
            torch.nn.functional.mse_loss(models[name](x), y).backward()
            opts[name].step()
        done = step + 1
        if done % every == 0:
            payload = {
                name: {"model": models[name].state_dict(), "opt": opts[name].state_dict()}
                for name in NAMES
            }
            payload["step"] = done
            temporary = directory / f".ckpt-{done}.tmp"
            torch.save(payload, temporary)
            os.replace(temporary, directory / f"ckpt-{done}.pt")
            print(f"checkpoint {done}", flush=True)
            if mode == "killable":
                print("ready", flush=True)
        if mode == "killable" and done >= every:
            time.sleep(0.5)
    final = {
        name: {"model": models[name].state_dict(), "opt": opts[name].state_dict()} for name in NAMES
    }
    torch.save(final, directory / "final.pt")
    print("finished", flush=True)


if __name__ == "__main__":
    main()
