"""bench/long_run.py at a small step count: no NaN/Inf anywhere, held-out loss down, bounded norms.

The 2000-step numbers come from `python bench/long_run.py --steps 2000` (see docs/reliability.md).
"""

from __future__ import annotations

import importlib.util
import math
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "bench" / "long_run.py"


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    spec = importlib.util.spec_from_file_location("long_run", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    out = tmp_path_factory.mktemp("long_run") / "long_run.json"
    return module.main(["--steps", "30", "--every", "10", "--out", str(out)])


@pytest.mark.parametrize("name", ["MicroAdam", "LDAdam", "Adapprox"])
def test_thirty_steps_stay_finite_and_bounded(results, name):
    record = results[name]
    assert record["nonfinite_at"] is None
    assert record["step"][-1] == 30 and len(record["loss"]) == 3
    assert all(math.isfinite(v) for v in record["loss"] + record["grad_norm"] + record["ef_ratio"])
    assert record["eval_loss"][-1] < record["eval_loss"][0]
    # error feedback stays of the order of the gradient (it holds a few steps' residuals)
    assert max(record["ef_ratio"]) < 20
    for key, values in record["state_norms"].items():
        assert all(math.isfinite(v) and v < 1e4 for v in values), key
    if name != "Adapprox":
        assert max(record["ef_ratio"]) > 0  # MicroAdam and LDAdam do keep an error
