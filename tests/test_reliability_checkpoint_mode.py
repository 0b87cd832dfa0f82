"""`optimizers.checkpoint.save_atomic` creates its checkpoint with the permissions `torch.save`
would give a new file (0o666 less the umask), not the owner-only 0o600 of a temporary file, so
another reader (an evaluation job, a colleague on shared storage) can load it as before.
"""

from __future__ import annotations

import os
import stat
import sys

import pytest
import torch

from optimizers import checkpoint


@pytest.mark.skipif(sys.platform == "win32", reason="POSIX permission bits")
def test_save_atomic_gives_the_checkpoint_the_mode_torch_save_gives(tmp_path):
    torch.save({"x": torch.arange(3)}, tmp_path / "plain.pt")
    checkpoint.save_atomic({"x": torch.arange(3)}, tmp_path / "atomic.pt")
    mode = stat.S_IMODE(os.stat(tmp_path / "atomic.pt").st_mode)
    assert mode == stat.S_IMODE(os.stat(tmp_path / "plain.pt").st_mode)
    assert mode & stat.S_IRUSR and mode & stat.S_IWUSR
    assert torch.equal(checkpoint.load(tmp_path / "atomic.pt")["x"], torch.arange(3))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["atomic.pt", "plain.pt"]
