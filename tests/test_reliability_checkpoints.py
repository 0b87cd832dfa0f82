"""Checkpoint robustness: tampered state dicts are refused with a clear error, every checkpoint
loads with torch.load(weights_only=True), and a run SIGKILLed mid-training resumes from its last
checkpoint to end bit-identical to an uninterrupted run (separate processes, bounded time).

The contract suite already checks: AdamW's state refused, one wrong-shaped key, one missing key,
and save/load/continue in one process. This file adds every key × (shape, dtype, non-tensor),
extra keys, group-count/parameter-count mismatches, a missing format tag, each smallstate
optimizer's state offered to each other one, truncated files and the kill/resume run.
"""

from __future__ import annotations

import copy
import io
import os
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from contract.cases import CASES, tiny_batch, tiny_model

from optimizers import checkpoint

NAMES = ["microadam", "ldadam", "adapprox"]
WORKERS = Path(__file__).resolve().parent / "workers"
pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")


def trained(name, steps=2, dtype=torch.float32, **options):
    model = tiny_model(dtype)
    opt = CASES[name](model.parameters(), lr=1e-2, **options)
    x, y = tiny_batch(dtype)
    for _ in range(steps):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x).float(), y.float()).backward()
        opt.step()
    return model, opt


def fresh(name, model):
    return CASES[name](model.parameters(), lr=1e-2)


def refused(opt, state_dict, *fragments):
    with pytest.raises(ValueError) as caught:
        opt.load_state_dict(state_dict)
    message = str(caught.value)
    assert any(f in message for f in fragments), message
    assert all(len(s) == 0 for s in opt.state.values()), "a refused load must not leave state"


def saved_copy(opt):
    """A deep copy: torch's state_dict() shares the per-parameter dicts with the live state."""
    return copy.deepcopy(opt.state_dict())


def tensor_keys(saved):
    return [
        (pid, key)
        for pid, state in saved["state"].items()
        for key, value in state.items()
        if torch.is_tensor(value)
    ]


@pytest.mark.parametrize("name", NAMES)
def test_every_key_with_wrong_shape_dtype_or_type_is_refused_naming_it(name):
    model, opt = trained(name)
    saved = saved_copy(opt)
    keys = tensor_keys(saved)
    assert len(keys) >= 10
    for pid, key in keys:
        value = saved["state"][pid][key]
        other = torch.int32 if value.dtype != torch.int32 else torch.float32
        for bad in (
            torch.zeros(*value.shape, 2, dtype=value.dtype),  # wrong shape
            value.to(other),  # wrong dtype
            value.tolist() if value.ndim else value.item(),  # not a tensor
        ):
            tampered = saved_copy(opt)
            tampered["state"][pid][key] = bad
            refused(fresh(name, model), tampered, key)


@pytest.mark.parametrize("name", NAMES)
def test_missing_extra_keys_groups_and_parameters_are_refused(name):
    model, opt = trained(name)
    pid = next(iter(saved_copy(opt)["state"]))

    extra = saved_copy(opt)
    extra["state"][pid]["exp_avg_extra"] = torch.zeros(3)
    refused(fresh(name, model), extra, "keys")

    missing = saved_copy(opt)
    missing["state"][pid].pop(sorted(missing["state"][pid])[0])
    refused(fresh(name, model), missing, "keys")

    fewer = saved_copy(opt)
    fewer["param_groups"][0]["params"] = fewer["param_groups"][0]["params"][:-1]
    refused(fresh(name, model), fewer, "param groups")

    more_groups = saved_copy(opt)
    more_groups["param_groups"].append(dict(more_groups["param_groups"][0], params=[]))
    refused(fresh(name, model), more_groups, "param groups")

    untagged = saved_copy(opt)
    untagged.pop("smallstate")
    for group in untagged["param_groups"]:
        group.pop("smallstate")  # the tag each group carries (torch.distributed.checkpoint)
    refused(fresh(name, model), untagged, "saved by")

    future = saved_copy(opt)
    future["smallstate"]["format"] = 99
    refused(fresh(name, model), future, "format")

    unknown = saved_copy(opt)
    unknown["state"][999] = unknown["state"][pid]
    refused(fresh(name, model), unknown, "unknown parameter")

    invalid_group = saved_copy(opt)
    invalid_group["param_groups"][0]["lr"] = -1.0
    refused(fresh(name, model), invalid_group, "lr")


PAIRS = [(source, target) for source in NAMES for target in NAMES if source != target]


@pytest.mark.parametrize("source, target", PAIRS, ids=[f"{s}->{t}" for s, t in PAIRS])
def test_a_state_dict_goes_only_into_its_own_optimizer(source, target):
    model, opt = trained(source)
    refused(fresh(target, model), saved_copy(opt), "saved by")


@pytest.mark.parametrize(
    "name, option", [("microadam", "window"), ("ldadam", "rank"), ("adapprox", "k_max")]
)
def test_a_group_missing_a_hyperparameter_gets_the_default(name, option):
    """An older checkpoint (saved before `option` existed): the group gets today's default for it,
    as torch does; the state then has to fit that default, which these do."""
    model, opt = trained(name)
    old = saved_copy(opt)
    del old["param_groups"][0][option]
    target = fresh(name, model)
    target.load_state_dict(old)
    assert target.param_groups[0][option] == target.defaults[option]


@pytest.mark.parametrize("name", NAMES)
def test_truncated_checkpoint_files_fail_to_load_cleanly(name, tmp_path):
    model, opt = trained(name)
    path = tmp_path / "ckpt.pt"
    torch.save({"model": model.state_dict(), "opt": saved_copy(opt)}, path)
    data = path.read_bytes()
    for cut in (0, 10, len(data) // 3, len(data) - 5):
        (tmp_path / "cut.pt").write_bytes(data[:cut])
        with pytest.raises(ValueError, match=rf"cut\.pt.*truncated .*\({cut} bytes"):
            checkpoint.load(tmp_path / "cut.pt")
    damaged = bytearray(data)
    damaged[len(data) // 2] ^= 0xFF  # inside the tensor data: torch's reader would not notice
    (tmp_path / "flipped.pt").write_bytes(bytes(damaged))
    with pytest.raises(ValueError, match="flipped.pt.*corrupt.*fails its checksum"):
        checkpoint.load(tmp_path / "flipped.pt")
    loaded = checkpoint.load(path)
    assert torch.equal(loaded["opt"]["state"][0]["step"], saved_copy(opt)["state"][0]["step"])


def test_save_atomic_syncs_the_file_before_renaming_it_over_the_old_one(tmp_path, monkeypatch):
    calls = []
    real_fsync, real_replace = os.fsync, os.replace
    monkeypatch.setattr(os, "fsync", lambda fd: calls.append("fsync") or real_fsync(fd))
    monkeypatch.setattr(
        os, "replace", lambda a, b: calls.append(("replace", Path(a).parent)) or real_replace(a, b)
    )
    path = tmp_path / "ckpt.pt"
    checkpoint.save_atomic({"x": torch.arange(5)}, path)
    assert calls == ["fsync", ("replace", tmp_path), "fsync"]  # file, rename, directory
    assert torch.equal(checkpoint.load(path)["x"], torch.arange(5))
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]


def test_a_save_that_fails_midway_leaves_the_previous_checkpoint(tmp_path, monkeypatch):
    path = tmp_path / "ckpt.pt"
    checkpoint.save_atomic({"version": 1}, path)

    def half_then_fail(obj, file):
        file.write(b"PK\x03\x04 half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(torch, "save", half_then_fail)
    with pytest.raises(OSError, match="disk full"):
        checkpoint.save_atomic({"version": 2}, path)
    assert checkpoint.load(path) == {"version": 1}
    assert [p.name for p in tmp_path.iterdir()] == ["ckpt.pt"]  # no temporary file left


def test_sigkill_during_save_atomic_leaves_a_whole_checkpoint(tmp_path):
    """A process saving 16 MB checkpoints in a loop, killed at random moments (mostly inside a
    save): the file always loads and holds one whole version."""
    path = tmp_path / "ckpt.pt"
    delays = random.Random(0)
    for _ in range(2):
        saver = subprocess.Popen(
            [sys.executable, str(WORKERS / "save_loop.py"), str(path), "16"],
            stdout=subprocess.PIPE,
            text=True,
        )
        assert saver.stdout.readline().startswith("saved")
        time.sleep(delays.uniform(0.05, 0.5))
        saver.send_signal(signal.SIGKILL)
        saver.wait(timeout=60)
        loaded = checkpoint.load(path)
        assert (loaded["payload"] == loaded["version"]).all()
        for leftover in tmp_path.glob(".ckpt.pt.*.partial"):
            leftover.unlink()  # what a kill inside a save leaves: incomplete by construction


VARIANTS = [
    ("microadam", {"values_dtype": "float32"}, torch.float32),
    ("microadam", {"values_dtype": "param"}, torch.bfloat16),
    ("microadam", {}, torch.float16),
    ("ldadam", {"error_feedback": "q4"}, torch.float32),
    ("ldadam", {"error_feedback": "none"}, torch.bfloat16),
    ("ldadam", {"rank": 2, "side": "left"}, torch.float32),
    ("adapprox", {"rank_strategy": "prefix"}, torch.float32),
    ("adapprox", {}, torch.bfloat16),
    ("adapprox", {"compressed": False}, torch.float16),
]


@pytest.mark.parametrize("name, options, dtype", VARIANTS)
def test_every_checkpoint_loads_with_weights_only_and_continues_identically(name, options, dtype):
    model, opt = trained(name, steps=3, dtype=dtype, **options)
    buffer = io.BytesIO()
    torch.save({"model": model.state_dict(), "opt": saved_copy(opt)}, buffer)
    buffer.seek(0)
    saved = torch.load(buffer, weights_only=True)
    twin = tiny_model(dtype, seed=5)
    twin.load_state_dict(saved["model"])
    twin_opt = CASES[name](twin.parameters(), lr=1e-2, **options)
    twin_opt.load_state_dict(saved["opt"])
    x, y = tiny_batch(dtype)
    for m, o in ((model, opt), (twin, twin_opt)):
        for _ in range(2):
            o.zero_grad()
            torch.nn.functional.mse_loss(m(x).float(), y.float()).backward()
            o.step()
    for a, b in zip(model.parameters(), twin.parameters(), strict=True):
        assert torch.equal(a, b)


def test_microadam_refuses_out_of_range_window_indices():
    done = subprocess.run(
        [sys.executable, str(WORKERS / "tampered_indices.py")],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.strip().endswith("refused"), done.stdout


def launch(directory, steps, every, mode):
    return subprocess.Popen(
        [
            sys.executable,
            str(WORKERS / "kill_resume.py"),
            str(directory),
            str(steps),
            str(every),
            mode,
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def test_sigkill_mid_training_then_resume_is_bit_identical(tmp_path):
    steps, every = 16, 4
    full_dir, killed_dir = tmp_path / "full", tmp_path / "killed"
    full_dir.mkdir()
    killed_dir.mkdir()
    full = launch(full_dir, steps, every, "full")
    victim = launch(killed_dir, steps, every, "killable")
    deadline = time.monotonic() + 180
    for line in victim.stdout:
        if line.strip() == "checkpoint 8" or time.monotonic() > deadline:
            break
    time.sleep(0.7)  # a step or two past the checkpoint, mid-interval
    victim.send_signal(signal.SIGKILL)
    victim.wait(timeout=60)
    assert victim.returncode == -signal.SIGKILL
    assert not (killed_dir / "final.pt").exists()
    written = sorted(int(p.stem.split("-")[1]) for p in killed_dir.glob("ckpt-*.pt"))
    assert written and 8 <= written[-1] < steps
    resume = subprocess.run(
        [
            sys.executable,
            str(WORKERS / "kill_resume.py"),
            str(killed_dir),
            str(steps),
            str(every),
            "resume",
        ],
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert resume.returncode == 0, resume.stderr[-3000:]
    assert f"resumed from {written[-1]}" in resume.stdout
    assert full.wait(timeout=180) == 0, full.stderr.read()[-3000:]
    reference = torch.load(full_dir / "final.pt", weights_only=True)
    resumed = torch.load(killed_dir / "final.pt", weights_only=True)
    for name in NAMES:
        for key, value in reference[name]["model"].items():
            assert torch.equal(value, resumed[name]["model"][key]), (name, key)
        for pid, state in reference[name]["opt"]["state"].items():
            for key, value in state.items():
                other = resumed[name]["opt"]["state"][pid][key]
                assert torch.equal(value, other) if torch.is_tensor(value) else value == other
