"""The training comparison (smallstate-compare): the command line's errors and exit statuses, the
results layout, interrupt and resume, the lr bracketing, the alternating timing phase, the table
and the figure. Training runs use the 'tiny' preset on small in-memory corpora (the real ones
take most of a minute to read on a busy machine); the corpus functions are tested on a folder."""

from __future__ import annotations

import contextlib
import importlib.util
import io
import json
import math
import statistics
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from optimizers.comparison import cli, experiment, report, sweep, timing
from optimizers.comparison.corpus import (
    Corpus,
    fixed_batches,
    is_validation_file,
    load_stdlib_corpus,
    load_test_suite_corpus,
    random_batch,
)
from optimizers.comparison.presets import PRESETS
from optimizers.comparison.registry import REGISTRY, runs_in, state_nbytes
from optimizers.comparison.schedule import warmup_cosine_factor

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
RECORD_KEYS = {
    "val_loss",
    "val_loss_seeds",
    "val_loss_spread",
    "seeds",
    "lr",
    "lr_grid",
    "state_bytes_per_param",
    "opt_step_median_ms",
    "opt_step_iqr_ms",
    "full_step_median_ms",
    "full_step_iqr_ms",
    "val_curves",
}
SAMPLE = b"def add(a, b):\n    return a + b\n\nclass Point:\n    x: int = 0\n" * 40


def tiny_corpus(shift: int) -> Corpus:
    data = torch.frombuffer(bytearray(SAMPLE[shift:] + SAMPLE[:shift]), dtype=torch.uint8)
    return Corpus(train=data, val=data[:600].clone(), root="memory", train_files=1, val_files=1)


@pytest.fixture
def small_corpora(monkeypatch):
    monkeypatch.setattr(experiment, "load_stdlib_corpus", lambda: tiny_corpus(0))
    monkeypatch.setattr(experiment, "load_test_suite_corpus", lambda: tiny_corpus(7))


def run_cli(argv):
    printed, errors = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(printed), contextlib.redirect_stderr(errors):
        status = cli.main(argv)
    return SimpleNamespace(status=status, stdout=printed.getvalue(), stderr=errors.getvalue())


def tiny_argv(out, optimizers, *extra):
    return ["--preset", "tiny", "--device", "cpu", "--no-progress", "--out", str(out),
            "--threads", "1", "--optimizers", optimizers, *extra]  # fmt: skip


# --------------------------------------------------------------------------- a whole tiny run
@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("compare") / "run"
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(experiment, "load_stdlib_corpus", lambda: tiny_corpus(0))
        patch.setattr(experiment, "load_test_suite_corpus", lambda: tiny_corpus(7))
        done = run_cli(tiny_argv(out, "adamw,adafactor,microadam-alpha", "--seeds", "2"))
    payload = json.loads((out / "results.json").read_text())
    return SimpleNamespace(out=out, payload=payload, **vars(done))


def test_results_json_has_the_issue_layout(tiny_run):
    assert tiny_run.status == 0, tiny_run.stderr
    payload = tiny_run.payload
    assert set(payload) == {"settings", "machine", "tasks"}
    assert list(payload["tasks"]) == ["pretrain", "finetune"]
    # the densifying variant is a pretraining setting; the others run in both tasks
    assert list(payload["tasks"]["pretrain"]) == ["adamw", "adafactor", "microadam-alpha"]
    assert list(payload["tasks"]["finetune"]) == ["adamw", "adafactor"]
    for records in payload["tasks"].values():
        for record in records.values():
            assert RECORD_KEYS <= set(record), RECORD_KEYS - set(record)
            assert record["seeds"] == [0, 1] and len(record["val_loss_seeds"]) == 2
            assert record["val_loss"] == pytest.approx(statistics.fmean(record["val_loss_seeds"]))
            spread = max(record["val_loss_seeds"]) - min(record["val_loss_seeds"])
            assert record["val_loss_spread"] == pytest.approx(spread)
            assert record["lr"] in record["lr_grid"] and len(record["lr_grid"]) >= 2
            assert record["opt_step_median_ms"] > 0 and record["full_step_median_ms"] > 0
    assert payload["settings"]["steps"] == {"pretrain": 6, "finetune": 4}
    assert payload["machine"]["usable_cores"] >= 1


def test_seeds_differ_and_finetuning_starts_from_the_trained_base(tiny_run):
    pretrain, finetune = (tiny_run.payload["tasks"][t]["adamw"] for t in ("pretrain", "finetune"))
    assert pretrain["val_loss_seeds"][0] != pretrain["val_loss_seeds"][1]
    # the base model was trained: it starts below the untrained model's ~log(256) loss
    assert finetune["initial_val_loss"] < pretrain["initial_val_loss"] - 0.05
    assert (tiny_run.out / experiment.BASE_FILE).exists()


def test_table_names_each_task_explains_columns_and_matches_the_json(tiny_run):
    table = (tiny_run.out / "table.txt").read_text()
    assert table.strip() in tiny_run.stdout
    assert "pretrain: pretraining from scratch" in table
    assert "finetune: fine-tuning the AdamW-pretrained model" in table
    assert "lower is better" in table and "nats/byte" in table and "> 1: slower" in table
    for task, records in tiny_run.payload["tasks"].items():
        section = table.split(f"{task}: {report.TASK_TITLES[task]}")[1]
        for name, record in records.items():
            row = next(line for line in section.splitlines() if line.startswith(name + " "))
            assert f"{record['val_loss']:.4f}" in row
            assert f"{record['state_bytes_per_param']:.3f}" in row
    adamw = tiny_run.payload["tasks"]["pretrain"]["adamw"]
    assert adamw["val_loss_ratio_to_adamw"] == 1.0 and 7.9 < adamw["state_bytes_per_param"] < 8.1


@pytest.mark.skipif(importlib.util.find_spec("matplotlib") is None, reason="needs matplotlib")
def test_figure_is_written(tiny_run):
    assert (tiny_run.out / "comparison.png").read_bytes().startswith(PNG_SIGNATURE)


def test_loss_axis_ignores_step_zero():
    records = {
        "a": {"status": "ran", "val_curves": [[[0, 5.5], [10, 2.4], [20, 2.0]]]},
        "b": {"status": "ran", "val_curves": [[[0, 5.5], [10, 2.6], [20, 2.2]]] * 2},
        "c": {"status": "unavailable"},
    }
    low, high = report.loss_limits(records)
    assert 1.9 < low < 2.0 and 2.6 < high < 2.7
    assert report.mean_curve([[[0, 1.0], [5, 2.0]], [[0, 3.0], [5, 4.0]]]) == ([0, 5], [2.0, 3.0])


# --------------------------------------------------------------------------- arguments
BAD_ARGUMENTS = [
    (["--steps", "0"], "--steps"),
    (["--steps", "-5"], "--steps"),
    (["--finetune-steps", "0"], "--finetune-steps"),
    (["--seeds", "0"], "--seeds"),
    (["--optimizers", "adamw,sgd"], "valid names: adamw, adafactor"),
    (["--lr", "0"], "--lr"),
    (["--lr", "fast"], "--lr"),
    (["--lr", "nan"], "--lr"),
    (["--lr", "sgd=1e-3"], "valid names"),
    (["--optimizers", "adamw", "--lr", "ldadam=1e-3"], "ldadam not among --optimizers"),
    (["--threads", "0"], "--threads"),
    (["--threads", "two"], "--threads"),
    (["--device", "tpu"], "--device"),
    (["--task", "translate"], "--task"),
    (["--quick", "--preset", "default"], "--quick conflicts"),
]


@pytest.mark.parametrize(("argv", "named"), BAD_ARGUMENTS)
def test_bad_arguments_are_usage_errors_and_create_no_folder(tmp_path, capsys, argv, named):
    out = tmp_path / "never"
    with pytest.raises(SystemExit) as stopped:
        cli.main([*argv, "--out", str(out)])
    assert stopped.value.code == 2
    err = capsys.readouterr().err
    assert err.startswith("usage: smallstate-compare") and named in err
    assert not out.exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="cuda is available here")
def test_cuda_without_cuda_is_a_usage_error(tmp_path, capsys):
    with pytest.raises(SystemExit) as stopped:
        cli.main(["--device", "cuda", "--out", str(tmp_path / "x")])
    assert stopped.value.code == 2 and "cuda" in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_console_entry_reports_bad_arguments_without_a_traceback(tmp_path):
    done = subprocess.run(
        [
            sys.executable,
            "-m",
            "optimizers.comparison",
            "--steps",
            "0",
            "--out",
            str(tmp_path / "o"),
        ],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert "--steps: must be an integer >= 1, got 0" in done.stderr
    assert not (tmp_path / "o").exists()


def test_every_option_has_help_text():
    parser = cli.build_parser()
    for action in parser._actions:
        assert action.help, action.option_strings
    assert "--task" in parser.format_help() and "both" in parser.format_help()


def test_lr_arguments_fix_the_lr_and_skip_the_sweep(tmp_path, small_corpora):
    done = run_cli(tiny_argv(tmp_path / "r", "adamw", "--task", "pretrain", "--lr", "2e-3"))
    record = json.loads((tmp_path / "r" / "results.json").read_text())["tasks"]["pretrain"]["adamw"]
    assert done.status == 0 and record["lr"] == 2e-3 and record["lr_grid"] == [2e-3]
    assert record["lr_fixed"] and "2e-3" not in done.stdout and "0.002 given" in done.stdout
    assert cli.lr_spec("adamw=1e-4,ADAFACTOR=0.03") == {"adamw": 1e-4, "adafactor": 0.03}


# --------------------------------------------------------------------------- interrupt, resume
def test_ctrl_c_exits_130_in_one_line_and_a_rerun_resumes(tmp_path, small_corpora, monkeypatch):
    out = tmp_path / "run"
    argv = tiny_argv(out, "adamw,adafactor,ldadam", "--task", "pretrain")
    original = experiment.optimizer_record
    calls = []

    def interrupted_at_ldadam(name, *args, **kwargs):
        calls.append(name)
        if name == "ldadam":
            raise KeyboardInterrupt
        return original(name, *args, **kwargs)

    monkeypatch.setattr(experiment, "optimizer_record", interrupted_at_ldadam)
    done = run_cli(argv)
    assert done.status == 130
    assert done.stderr.strip().count("\n") == 0 and "interrupted" in done.stderr
    assert "Traceback" not in done.stderr
    kept = json.loads((out / "results.json").read_text())["tasks"]["pretrain"]
    assert list(kept) == ["adamw", "adafactor"]

    calls.clear()
    monkeypatch.setattr(
        experiment,
        "optimizer_record",
        lambda name, *a, **k: calls.append(name) or original(name, *a, **k),
    )
    done = run_cli(argv)
    assert done.status == 0 and calls == ["ldadam"]
    finished = json.loads((out / "results.json").read_text())["tasks"]["pretrain"]
    assert list(finished) == ["adamw", "adafactor", "ldadam"]
    assert finished["adamw"] == {
        **kept["adamw"],
        **{k: finished["adamw"][k] for k in finished["adamw"] if "step" in k or "ratio" in k},
    }
    assert "resuming: 2 optimizer results kept" in done.stdout


def test_an_out_folder_of_other_settings_is_refused(tmp_path, small_corpora, capsys):
    out = tmp_path / "run"
    assert run_cli(tiny_argv(out, "adamw", "--task", "pretrain")).status == 0
    before = (out / "results.json").read_text()
    with pytest.raises(SystemExit) as stopped:
        cli.main(tiny_argv(out, "adamw", "--task", "pretrain", "--steps", "5"))
    assert stopped.value.code == 2 and "other settings" in capsys.readouterr().err
    assert (out / "results.json").read_text() == before


def test_an_out_path_that_is_a_file_or_holds_a_broken_results_file_is_refused(tmp_path, capsys):
    a_file = tmp_path / "file"
    a_file.write_text("x")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "results.json").write_text("{not json")
    for out, message in ((a_file, "is not a folder"), (broken, "unreadable results.json")):
        with pytest.raises(SystemExit) as stopped:
            cli.main(["--out", str(out)])
        assert stopped.value.code == 2 and message in capsys.readouterr().err
    assert (broken / "results.json").read_text() == "{not json"


def test_runs_without_tqdm_and_matplotlib(tmp_path, small_corpora, monkeypatch):
    for module in ("tqdm", "tqdm.auto", "matplotlib"):
        monkeypatch.setitem(sys.modules, module, None)  # import now raises ImportError
    done = run_cli(tiny_argv(tmp_path / "r", "adamw", "--task", "pretrain", "--lr", "1e-3"))
    assert done.status == 0
    assert "figure skipped: matplotlib is not installed (pip install 'smallstate[bench]')" in (
        done.stdout
    )
    assert (tmp_path / "r" / "results.json").exists()
    assert not (tmp_path / "r" / "comparison.png").exists()


# --------------------------------------------------------------------------- lr bracketing
def test_grids_lie_on_the_one_three_ten_ladder():
    assert sweep.initial_grid(3e-3, points=3) == [1e-3, 3e-3, 1e-2]
    assert sweep.initial_grid(1e-3, points=2) == [1e-3, 3e-3]
    assert sweep.initial_grid(2.5e-3, points=1) == [3e-3]
    assert [sweep.ladder_value(sweep.ladder_index(x)) for x in (1e-4, 2e-4, 5e-4, 7e-4)] == [
        1e-4, 3e-4, 3e-4, 1e-3,
    ]  # fmt: skip
    with pytest.raises(ValueError, match="lr must be finite and > 0"):
        sweep.ladder_index(0.0)


def test_next_lr_extends_past_the_edge_holding_the_best():
    assert sweep.next_lr({1e-3: 2.0, 3e-3: 1.9, 1e-2: 2.2}) is None
    assert sweep.next_lr({1e-3: 2.0, 3e-3: 1.9, 1e-2: 1.8}) == 3e-2
    assert sweep.next_lr({1e-3: 1.7, 3e-3: 1.9}) == 3e-4
    assert sweep.next_lr({1e-3: math.nan, 3e-3: math.inf}) == 3e-4  # all diverged: go lower
    assert sweep.best_lr({1e-3: 2.0, 3e-3: math.nan, 1e-2: 1.9}) == 1e-2
    assert sweep.is_bracketed({1e-3: 2.0, 3e-3: 1.9, 1e-2: 2.2})
    assert not sweep.is_bracketed({1e-3: 2.0, 3e-3: 1.9})


@pytest.mark.parametrize(
    ("optimum", "chosen", "tried", "bracketed"),
    [
        (1e-3, 1e-3, [3e-4, 1e-3, 3e-3], True),  # bracketed by the first grid
        (1e-2, 1e-2, [3e-4, 1e-3, 3e-3, 1e-2, 3e-2], True),  # two extensions up
        (1e-4, 1e-4, [3e-5, 1e-4, 3e-4, 1e-3, 3e-3], True),  # two down
        (1e0, 3e-2, [3e-4, 1e-3, 3e-3, 1e-2, 3e-2], False),  # bound reached: noted
    ],
)
def test_the_sweep_brackets_its_choice_within_the_extension_bound(
    monkeypatch, optimum, chosen, tried, bracketed
):
    """A fake run whose loss is the log-distance to ``optimum``: the sweep starts at 3 points
    around adamw's finetune centre 1e-3 (3e-4, 1e-3, 3e-3), extends at most twice."""

    def fake_run(name, *, lr, config, **kwargs):
        loss = abs(math.log10(lr / optimum)) + 0.01 * config.seed
        return {"val_loss": loss, "notes": [], "train_loss": loss, "initial_val_loss": 5.0,
                "n_params": 10, "state_bytes": 80, "state_bytes_per_param": 8.0,
                "optimizer_class": "x", "val_curve": [[0, 5.0], [config.steps, loss]],
                "steps_done": config.steps, "wall_seconds": 0.0}  # fmt: skip

    monkeypatch.setattr(experiment, "train_run", fake_run)
    preset = PRESETS["default"]
    plan = experiment.Plan(
        preset_name="default", preset=preset, tasks=("finetune",), names=("adamw",),
        fixed_lr={}, steps={"finetune": 150}, sweep_steps={"finetune": 75}, seeds=(0, 1),
        device="cpu", progress=False,
    )  # fmt: skip
    record = experiment.optimizer_record("adamw", "finetune", plan, None, lambda s: {}, print)
    assert record["lr"] == pytest.approx(chosen) and record["lr_bracketed"] is bracketed
    assert record["lr_grid"] == pytest.approx(tried)
    assert record["val_loss_seeds"] == pytest.approx(
        [abs(math.log10(chosen / optimum)), abs(math.log10(chosen / optimum)) + 0.01]
    )
    assert any("edge of the grid" in note for note in record["notes"]) is not bracketed


# --------------------------------------------------------------------------- timing phase
def test_timing_alternates_the_optimizers_and_warns_on_load(monkeypatch):
    order = []

    def fake_step(model, optimizer, x, y, *, device):
        order.append(type(optimizer).__name__)
        return 1.0, 0.001 * len(order) % 0.004 + 0.001, 0.01

    monkeypatch.setattr(timing, "timed_step", fake_step)
    monkeypatch.setattr(timing, "load_average", lambda: 64.0)
    config = experiment.preset_config(PRESETS["tiny"], steps=4, seed=0, device="cpu")
    init = experiment.initial_state(PRESETS["tiny"].model, 0)
    stats, messages = timing.alternating_timings(
        ["adamw", "adafactor"],
        lrs={"adamw": 1e-3, "adafactor": 1e-2},
        config=config,
        train_data=tiny_corpus(0).train,
        init=init,
        rounds=4,
    )
    timed = order[2 * timing.WARMUP_STEPS :]
    assert timed == ["AdamW", "Adafactor"] * 4
    assert stats["adamw"]["rounds"] == 4 and stats["adamw"]["full_step_median_ms"] == 10.0
    assert stats["adamw"]["full_step_iqr_ms"] == 0.0
    assert any("load average 64.0 exceeded" in m for m in messages)
    assert any("spread" in m and "adamw" in m for m in messages)
    assert timing.spread([1.0, 2.0, 3.0, 4.0, 100.0]) == (3.0, 2.0)


@pytest.mark.parametrize("extra, warns", [(0.2, False), (1.0, True)])
def test_the_load_warning_tolerates_the_phase_filling_its_own_cores(monkeypatch, extra, warns):
    monkeypatch.setattr(timing, "timed_step", lambda *a, device: (1.0, 0.001, 0.01))
    monkeypatch.setattr(timing, "usable_cores", lambda: 2)
    monkeypatch.setattr(timing, "load_average", lambda: 2.0 + extra)
    config = experiment.preset_config(PRESETS["tiny"], steps=4, seed=0, device="cpu")
    init = experiment.initial_state(PRESETS["tiny"].model, 0)
    _, messages = timing.alternating_timings(
        ["adamw"], lrs={"adamw": 1e-3}, config=config, train_data=tiny_corpus(0).train,
        init=init, rounds=2,
    )  # fmt: skip
    assert any("exceeded the 2 usable cores" in m for m in messages) is warns


# --------------------------------------------------------------------------- building blocks
def write_tree(root: Path, files: dict[str, bytes]) -> None:
    for relative, content in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(content)


def test_test_suites_are_held_out_of_pretraining_and_form_the_finetune_corpus(tmp_path):
    sources = {f"pkg{i}/mod{j}.py": b"x = %d\n" % (i * 10 + j) for i in range(6) for j in range(8)}
    tests = {f"test/test_{i}.py": b"assert %d\n" % i for i in range(40)}
    tests.update({"pkg1/tests/test_a.py": b"assert 1\n", "idlelib/idle_test/t.py": b"pass\n"})
    third_party = {"site-packages/lib/tests/test_z.py": b"nope\n", "site-packages/z.py": b"no\n"}
    write_tree(tmp_path, {**sources, **tests, **third_party})
    pretrain = load_stdlib_corpus(root=str(tmp_path), val_fraction=0.2)
    finetune = load_test_suite_corpus(root=str(tmp_path), val_fraction=0.2)
    assert pretrain.train_files + pretrain.val_files == len(sources)
    assert finetune.train_files + finetune.val_files == len(tests)
    assert b"assert" not in bytes(pretrain.train.numpy()) + bytes(pretrain.val.numpy())
    assert b"x = " not in bytes(finetune.train.numpy()) + bytes(finetune.val.numpy())
    with pytest.raises(ValueError, match="test-suite .py files"):
        load_test_suite_corpus(root=str(tmp_path / "pkg1"))
    assert is_validation_file("json/decoder.py", 0.5) == is_validation_file("json/decoder.py", 0.5)
    with pytest.raises(ValueError, match="val_fraction"):
        load_test_suite_corpus(val_fraction=0.0)


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


def test_registry_variants_and_task_membership():
    assert {"microadam-alpha", "microadam-window"} <= set(REGISTRY)
    assert runs_in("microadam-alpha", "pretrain") and not runs_in("microadam-alpha", "finetune")
    assert runs_in("microadam-window", "finetune") and runs_in("adamw", "finetune")


def test_module_entry_point_runs():
    done = subprocess.run(
        [sys.executable, "-m", "optimizers.comparison", "--help"],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0 and "--task" in done.stdout and "--finetune-steps" in done.stdout
