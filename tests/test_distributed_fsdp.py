"""FSDP2 (fully_shard on CPU, gloo, 2 processes) through `sharded_optimizer`.

- AdamW and MicroAdam step each rank's local shard; LDAdam and Adapprox step whole matrices on
  an owner rank. Each must equal, bit for bit, single-process training whose gradient is formed
  with the reduce-scatter's arithmetic (each half-batch gradient / 2, summed in rank order; exact
  for world 2). MicroAdam uses blocks of 8, which divide every shard, so its shard-local top-k
  blocks are the single process's blocks. (Against a full-batch gradient, MicroAdam with such
  small blocks is not comparable to rounding: a one-ulp gradient change flips top-2-of-8
  selections, measured 0.03 parameter difference even between two single-process runs.)
- MicroAdam's state is split across ranks (each holds about half).
- A torch.distributed.checkpoint save at step 10 (of 20) resumes bit-identically into fresh objects.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path.insert(0, str(Path(__file__).resolve().parent / "distributed_workers"))
from common import make_model  # noqa: E402
from harness import run_workers  # noqa: E402

OURS = ["MicroAdam", "LDAdam", "Adapprox"]


@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("fsdp")
    return run_workers("fsdp_worker.py", out, "AdamW", *OURS, world=2, timeout=150)


def _entry(ranks, name, rank=0):
    return ranks[rank][name]


@pytest.mark.parametrize("name", ["AdamW", "MicroAdam", "LDAdam", "Adapprox"])
def test_sharded_training_equals_single_process(ranks, name):
    entry = _entry(ranks, name)
    start = dict(make_model().named_parameters())
    assert max((entry["params"][k] - start[k]).abs().max().item() for k in start) > 0.02
    for key, value in entry["params"].items():
        assert torch.equal(value, entry["split_params"][key]), key
        assert torch.equal(value, ranks[1][name]["params"][key]), key


def test_microadam_state_is_split_across_ranks(ranks):
    first, second = _entry(ranks, "MicroAdam"), _entry(ranks, "MicroAdam", 1)
    total = first["reference_state_nbytes"]
    assert first["state_nbytes"] < 0.6 * total and second["state_nbytes"] < 0.6 * total
    assert first["state_nbytes"] + second["state_nbytes"] >= total


@pytest.mark.parametrize("name", ["LDAdam", "Adapprox"])
def test_matrices_are_stepped_on_one_owner_each(ranks, name):
    paths = [_entry(ranks, name, rank)["paths"] for rank in (0, 1)]
    compressed = [[p for p in rank_paths if p.startswith(name.lower())] for rank_paths in paths]
    assert len(compressed[0]) == 1 and len(compressed[1]) == 1


def test_dcp_checkpoint_resumes_bit_identically(ranks):
    for rank in (0, 1):
        entry = _entry(ranks, "MicroAdam", rank)
        for key, value in entry["continued"].items():
            assert torch.equal(value, entry["resumed"][key]), key


@pytest.mark.parametrize("name", OURS)
def test_a_non_finite_gradient_on_one_rank_makes_every_rank_raise_with_nothing_changed(ranks, name):
    """Rank 0 sees the NaN and raises FloatingPointError; rank 1 (which would otherwise have
    stepped, or waited in the owner's scatter forever) raises too, naming the other rank."""
    first, second = (_entry(ranks, name, rank)["nonfinite"] for rank in (0, 1))
    assert first["error"] == "FloatingPointError" and second["error"] == "RuntimeError"
    for result in (first, second):
        assert result["unchanged"] and result["grad_kept"]
