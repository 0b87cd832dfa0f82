"""The training comparison (smallstate-compare): one --quick run in-process, checked end to end,
plus the pieces it is built from (corpus split, schedule, state accounting, argument parsing)."""

import contextlib
import io
import json
import math
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from optimizers.comparison import cli
from optimizers.comparison.corpus import (
    fixed_batches,
    is_validation_file,
    load_stdlib_corpus,
    random_batch,
    stdlib_sources,
)
from optimizers.comparison.registry import DEFAULT_OPTIMIZERS, state_nbytes, unavailable_reason
from optimizers.comparison.report import COLUMNS
from optimizers.comparison.schedule import warmup_cosine_factor

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare")
    printed = io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(io.StringIO()):
        status = cli.main(["--quick", "--device", "cpu", "--out", str(out)])
    payload = json.loads((out / "results.json").read_text())
    return SimpleNamespace(out=out, status=status, stdout=printed.getvalue(), payload=payload)


def _ran(payload):
    return [r for r in payload["results"] if r["status"] == "ran"]


def test_quick_run_writes_json_table_and_png(quick_run):
    assert quick_run.status == 0
    assert (quick_run.out / "comparison.png").read_bytes().startswith(PNG_SIGNATURE)
    table = (quick_run.out / "table.txt").read_text()
    assert table.strip() in quick_run.stdout
    corpus = quick_run.payload["corpus"]
    assert corpus["train_bytes"] > 1_000_000 and corpus["val_bytes"] > 50_000
    assert f"{corpus['train_files']} train files" in quick_run.stdout
    assert quick_run.payload["machine"]["threads"]["torch"] >= 1


def test_every_available_optimizer_ran_and_the_others_say_why(quick_run):
    by_name = {r["name"]: r for r in quick_run.payload["results"]}
    assert list(by_name) == list(DEFAULT_OPTIMIZERS)
    for name in DEFAULT_OPTIMIZERS:
        reason = unavailable_reason(name)
        assert by_name[name]["status"] == ("ran" if reason is None else "unavailable")
        if reason is not None:
            assert f"skipped {name}: {reason}" in quick_run.stdout
    assert {"adamw", "adafactor", "ldadam", "adapprox", "microadam", "microadam-noef"} <= {
        r["name"] for r in _ran(quick_run.payload)
    }


def test_state_bytes_order_microadam_ldadam_q4_adamw(quick_run):
    per_param = {r["name"]: r["state_bytes_per_param"] for r in _ran(quick_run.payload)}
    assert per_param["microadam"] < per_param["ldadam"] < per_param["adamw"]
    assert per_param["microadam-noef"] < per_param["microadam"] - 0.4  # no 4-bit error store


def test_losses_are_finite_and_fall(quick_run):
    steps = quick_run.payload["settings"]["steps"]
    for result in _ran(quick_run.payload):
        assert result["steps_done"] == steps, result["notes"]
        assert all(math.isfinite(loss) for loss in result["train_losses"])
        assert result["final_val_loss"] < result["initial_val_loss"], result["name"]
        assert result["final_train_loss"] < result["first_train_loss"], result["name"]
        assert [step for step, _ in result["val_curve"]][-1] == steps


def test_all_runs_start_from_the_same_model(quick_run):
    initial = {r["initial_val_loss"] for r in _ran(quick_run.payload)}
    assert len(initial) == 1


def test_table_numbers_match_the_json(quick_run):
    lines = (quick_run.out / "table.txt").read_text().splitlines()
    rows = {
        line.split()[0]: line.split()[1:]
        for line in lines[2:]
        if not line.startswith(("skipped", "note"))
    }
    assert sorted(rows) == sorted(r["name"] for r in _ran(quick_run.payload))
    for result in _ran(quick_run.payload):
        for cell, (_, key, decimals) in zip(rows[result["name"]], COLUMNS, strict=True):
            assert float(cell) == pytest.approx(result[key], abs=0.51 * 10.0**-decimals), key
    adamw = next(r for r in quick_run.payload["results"] if r["name"] == "adamw")
    assert adamw["val_loss_ratio_to_adamw"] == 1.0
    assert 7.9 < adamw["state_bytes_per_param"] < 8.1  # two float32 moments


def test_split_is_by_file_deterministic_and_covers_every_source():
    corpus = load_stdlib_corpus(val_fraction=0.1)
    root = Path(corpus.root)
    sources = stdlib_sources(root)
    assert corpus.train_files + corpus.val_files == len(sources)
    assert not any(
        "site-packages" in p.parts or "test" in p.relative_to(root).parts for p in sources
    )
    val_bytes = sum(
        p.stat().st_size for p in sources if is_validation_file(p.relative_to(root).as_posix(), 0.1)
    )
    assert corpus.val.numel() == val_bytes
    assert is_validation_file("json/decoder.py", 0.5) == is_validation_file("json/decoder.py", 0.5)
    with pytest.raises(ValueError, match="val_fraction"):
        load_stdlib_corpus(val_fraction=1.5)


def test_batches_are_next_byte_pairs_and_reproducible():
    data = torch.arange(1000, dtype=torch.int64).to(torch.uint8)
    first = random_batch(data, batch_size=4, seq_len=16, generator=torch.Generator().manual_seed(3))
    again = random_batch(data, batch_size=4, seq_len=16, generator=torch.Generator().manual_seed(3))
    assert torch.equal(first[0], again[0])
    x, y = first
    assert torch.equal(x[:, 1:], y[:, :-1]) and x.shape == (4, 16)
    batches = fixed_batches(data, count=3, batch_size=2, seq_len=16)
    assert len(batches) == 3 and batches[-1][1][-1, -1] == 999 % 256


def test_schedule_warms_up_linearly_then_decays_to_the_final_ratio():
    factor = [
        warmup_cosine_factor(s, warmup_steps=10, total_steps=100, final_ratio=0.1)
        for s in range(101)
    ]
    assert factor[0] == pytest.approx(0.1) and factor[9] == pytest.approx(1.0)
    assert factor[100] == pytest.approx(0.1)
    assert all(a >= b for a, b in zip(factor[9:-1], factor[10:], strict=True))


def test_state_bytes_use_the_optimizer_report_when_present():
    param = torch.nn.Parameter(torch.zeros(10, 3))
    param.grad = torch.ones(10, 3)
    adamw = torch.optim.AdamW([param])
    adamw.step()
    assert state_nbytes(adamw) == 2 * 30 * 4 + 4  # exp_avg, exp_avg_sq, float32 step
    reports_int = SimpleNamespace(state_nbytes=lambda: 123, state={})
    reports_total = SimpleNamespace(state_nbytes=lambda: SimpleNamespace(total=45), state={})
    assert state_nbytes(reports_int) == 123 and state_nbytes(reports_total) == 45
    nested = SimpleNamespace(state={param: {"projector": SimpleNamespace(basis=torch.zeros(5))}})
    assert state_nbytes(nested) == 20


def test_bad_arguments_name_the_option():
    with pytest.raises(ValueError, match="optimizers must be"):
        cli.parse_optimizers("adamw,sgd")
    with pytest.raises(ValueError, match="lr names"):
        cli.parse_lr("ldadam=1e-3", ["adamw"])
    assert cli.parse_lr("adamw=1e-4", ["adamw", "adafactor"])["adamw"] == 1e-4
    assert set(cli.parse_lr("0.5", ["adamw", "adafactor"]).values()) == {0.5}


def test_module_entry_point_runs():
    done = subprocess.run(
        [sys.executable, "-m", "optimizers.comparison", "--help"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0 and "--preset" in done.stdout
