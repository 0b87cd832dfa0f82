"""optimizers.precompile: a cache it warms serves a later process's steps without compiling."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from optimizers.precompile import precompile

ROOT = Path(__file__).resolve().parents[1]

# A later process: other shapes (a tall matrix too) than precompile's model, three LDAdam steps;
# prints how many functions Numba compiled and how many it loaded from the cache.
LATER_PROCESS = """
import json, sys, torch
from numba.core import event
from numba.core.registry import CPUDispatcher
from optimizers import LDAdam
compiled = event.RecordingListener()
event.register("numba:compile", compiled)
params = [torch.nn.Parameter(torch.randn(shape)) for shape in ((700, 530), (33, 17), (17,))]
optimizer = LDAdam(params)
for _ in range(3):
    for p in params:
        p.grad = torch.randn(p.shape)
    optimizer.step()
packages = ("compress", "optimizers", "randla")
ours = [m for name, m in sys.modules.items() if name.split(".")[0] in packages]
loaded = sum(
    sum(f._cache_hits.values())
    for m in ours for f in vars(m).values() if isinstance(f, CPUDispatcher)
)
print(json.dumps([sum(1 for _, e in compiled.buffer if e.is_start), loaded]))
"""


def run(args: list[str], cache: Path) -> str:
    done = subprocess.run(
        [sys.executable, *args],
        cwd=ROOT,
        env=dict(os.environ, NUMBA_CACHE_DIR=str(cache)),
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout


def test_a_warmed_cache_serves_a_later_process_without_compiling(tmp_path):
    warmed = tmp_path / "warmed"
    printed = run(["-m", "optimizers.precompile", "ldadam", "--dtypes", "float32"], warmed)
    assert [line.split(":")[0] for line in printed.splitlines()] == ["ldadam float32"]
    compiled, loaded = json.loads(run(["-c", LATER_PROCESS], warmed).splitlines()[-1])
    assert compiled == 0 and loaded > 0


@pytest.mark.parametrize(
    "name, dtype, match",
    [
        ("sgd", "float32", "name must be one of microadam, ldadam, adapprox"),
        ("ldadam", "int8", "dtype"),
    ],
)
def test_rejects_unknown_names_and_dtypes(name, dtype, match):
    with pytest.raises(ValueError, match=match):
        precompile(name, dtype)


def test_command_line_rejects_an_unknown_optimizer(capsys):
    from optimizers.precompile import main

    with pytest.raises(SystemExit) as exit_info:
        main(["sgd"])
    assert exit_info.value.code == 2
    assert "unknown optimizer(s) sgd" in capsys.readouterr().err
