"""torch.distributed.checkpoint's state-dict API (what torchtitan, Lightning's ModelParallel
strategy and accelerate's FSDP path call) with every optimizer and its main state variants.

One process: `get_optimizer_state_dict` → `set_optimizer_state_dict` directly, and through a
`dcp.save`/`dcp.load` round trip, nested and flattened (`flatten_optimizer_state_dict`, which
torchtitan uses): the loaded state equals the saved one tensor for tensor in its dtype, and
training continues bit-identically, while a fresh optimizer continues differently. Foreign state
dicts (torch's AdamW, another smallstate optimizer) stay refused, and the tag rules are checked.
FSDP2 (fully_shard, 2 gloo processes): tests/distributed_workers/dcp_worker.py, same checks per
rank, plus the refusal of per-rank entries from another world size.
"""

from __future__ import annotations

import copy
import sys
from pathlib import Path

import pytest
import torch
import torch.distributed.checkpoint as dcp
from torch.distributed.checkpoint.api import CheckpointException
from torch.distributed.checkpoint.state_dict import (
    StateDictOptions,
    get_optimizer_state_dict,
    set_optimizer_state_dict,
)

import optimizers

sys.path.insert(0, str(Path(__file__).resolve().parent / "distributed_workers"))
from dcp_worker import MICROADAM, SCENARIOS  # noqa: E402
from harness import run_workers  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::UserWarning")  # dcp without a process group

VARIANTS = {
    "MicroAdam": ("MicroAdam", MICROADAM),  # int16 indices, uint8 codes, bf16-bit values
    "MicroAdam-f32-noerror": (
        "MicroAdam",
        {**MICROADAM, "values_dtype": "float32", "error_feedback": "none"},
    ),
    "LDAdam-dense": ("LDAdam", dict(rank=4)),  # a string (side), a float64 error fold
    "LDAdam-q4": ("LDAdam", dict(rank=4, error_feedback="q4")),  # uint8 codes, bf16 bounds
    "LDAdam-q8": ("LDAdam", dict(rank=4, error_feedback="q8")),
    "LDAdam-none": ("LDAdam", dict(rank=4, error_feedback="none")),
    "Adapprox": ("Adapprox", dict(k_max=4)),
    "Adapprox-beta1-0": ("Adapprox", dict(k_max=4, betas=(0.0, 0.999))),
}
STEPS = 3


def make_model() -> torch.nn.Module:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(64, 48), torch.nn.Tanh(), torch.nn.Linear(48, 1))


def make_optimizer(variant: str, model: torch.nn.Module) -> torch.optim.Optimizer:
    class_name, options = VARIANTS[variant]
    return getattr(optimizers, class_name)(model.parameters(), lr=1e-2, **options)


def train(model, optimizer, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    for _ in range(STEPS):
        x = torch.randn(16, 64, generator=generator)
        optimizer.zero_grad()
        torch.nn.functional.mse_loss(model(x), torch.sin(x[:, :1])).backward()
        optimizer.step()


def trained(variant: str):
    model = make_model()
    optimizer = make_optimizer(variant, model)
    train(model, optimizer, seed=1)
    return model, optimizer


def state_tensors(optimizer) -> dict[str, torch.Tensor]:
    return {
        f"{pid}.{key}": value.clone()
        for pid, entry in optimizer.state_dict()["state"].items()
        for key, value in entry.items()
        if torch.is_tensor(value)
    }


def assert_same_state(expected: dict, got: dict) -> None:
    assert set(got) == set(expected)
    for key, value in expected.items():
        assert got[key].dtype == value.dtype, key
        assert torch.equal(got[key], value), key


def io_options(flatten: bool) -> StateDictOptions:
    return StateDictOptions(flatten_optimizer_state_dict=flatten)


def test_the_variants_cover_every_state_dtype():
    dtypes = set()
    for variant in VARIANTS:
        model = make_model()
        optimizer = make_optimizer(variant, model)
        for param in model.parameters():
            meta = torch.empty_like(param, device="meta")
            state = optimizer._init_state(meta, optimizer.param_groups[0], 0)
            dtypes |= {value.dtype for value in state.values() if torch.is_tensor(value)}
    assert {torch.int16, torch.uint8, torch.bfloat16, torch.int64, torch.float64} <= dtypes


@pytest.mark.parametrize(
    "variant, flatten",
    [(variant, True) for variant in VARIANTS]
    + [(variant, False) for variant in ("MicroAdam", "LDAdam-dense", "Adapprox")],
)
def test_dcp_round_trip_resumes_bit_identically(variant, flatten, tmp_path):
    model, optimizer = trained(variant)
    options = io_options(flatten)
    optim = get_optimizer_state_dict(model, optimizer, options=options)
    dcp.save({"model": model.state_dict(), "optim": optim}, checkpoint_id=tmp_path, no_dist=True)
    saved = state_tensors(optimizer)
    train(model, optimizer, seed=2)

    resumed = make_model()
    resumed_optimizer = make_optimizer(variant, resumed)
    loaded = {
        "model": resumed.state_dict(),
        "optim": get_optimizer_state_dict(resumed, resumed_optimizer, options=options),
    }
    dcp.load(loaded, checkpoint_id=tmp_path, no_dist=True)
    resumed.load_state_dict(loaded["model"])
    set_optimizer_state_dict(resumed, resumed_optimizer, loaded["optim"], options=options)
    assert_same_state(saved, state_tensors(resumed_optimizer))
    control = copy.deepcopy(resumed)
    train(resumed, resumed_optimizer, seed=2)
    train(control, make_optimizer(variant, control), seed=2)
    for name, param in model.named_parameters():
        assert torch.equal(param, resumed.get_parameter(name)), name
    assert any(
        not torch.equal(a, b) for a, b in zip(model.parameters(), control.parameters(), strict=True)
    )


@pytest.mark.parametrize("flatten", [False, True], ids=["nested", "flattened"])
@pytest.mark.parametrize("variant", ["MicroAdam", "LDAdam-dense", "Adapprox"])
def test_get_then_set_without_dcp_moves_the_whole_state(variant, flatten):
    model, optimizer = trained(variant)
    options = io_options(flatten)
    state_dict = get_optimizer_state_dict(model, optimizer, options=options)
    # torch skips its state-creating step (whose state names the flattened form needs) when
    # a parameter has a gradient: a fresh process has none.
    model.zero_grad(set_to_none=True)
    target = make_optimizer(variant, model)
    set_optimizer_state_dict(model, target, state_dict, options=options)
    assert_same_state(state_tensors(optimizer), state_tensors(target))
    assert target.param_groups[0]["smallstate"] == optimizer.param_groups[0]["smallstate"]


@pytest.mark.parametrize("source", ["LDAdam-dense", "Adapprox", "AdamW"])
def test_foreign_state_dicts_are_refused_through_the_api(source):
    if source == "AdamW":
        model = make_model()
        optimizer = torch.optim.AdamW(model.parameters(), lr=1e-2)
        train(model, optimizer, seed=1)
        found = "a non-smallstate optimizer"
    else:
        model, optimizer = trained(source)
        found = VARIANTS[source][0]
    state_dict = get_optimizer_state_dict(model, optimizer)
    target = make_optimizer("MicroAdam", model)
    with pytest.raises(ValueError, match=f"saved by {found}, not by MicroAdam"):
        set_optimizer_state_dict(model, target, state_dict)
    # Flattened, torch rebuilds the groups from the target's own option names first; a foreign
    # dict lacks some of them and torch refuses it (KeyError naming the entry) before us.
    flattened = get_optimizer_state_dict(model, optimizer, options=io_options(True))
    with pytest.raises(KeyError, match="param_groups"):
        set_optimizer_state_dict(model, target, flattened, options=io_options(True))


def test_a_foreign_dcp_checkpoint_is_refused(tmp_path):
    model = make_model()
    adamw = torch.optim.AdamW(model.parameters(), lr=1e-2)
    train(model, adamw, seed=1)
    dcp.save(
        {"optim": get_optimizer_state_dict(model, adamw)}, checkpoint_id=tmp_path, no_dist=True
    )
    target = make_optimizer("MicroAdam", model)
    loaded = {"optim": get_optimizer_state_dict(model, target)}
    with pytest.raises(CheckpointException, match="Missing key in checkpoint"):
        dcp.load(loaded, checkpoint_id=tmp_path, no_dist=True)


@pytest.mark.parametrize("variant", ["MicroAdam", "LDAdam-dense", "Adapprox"])
def test_tag_rules(variant):
    """Either tag alone loads (top level: earlier checkpoints; groups: torch's API); none, a
    group tag of another optimizer or another format, is refused."""
    model, optimizer = trained(variant)
    name = VARIANTS[variant][0]
    saved = copy.deepcopy(optimizer.state_dict())
    assert saved["smallstate"] == {"optimizer": name, "format": 1}
    assert [g["smallstate"] for g in saved["param_groups"]] == [f"{name}, state format 1"]

    def load(state_dict):
        target = make_optimizer(variant, model)
        target.load_state_dict(state_dict)
        assert_same_state(state_tensors(optimizer), state_tensors(target))

    def without_group_tags(state_dict):
        return {
            **state_dict,
            "param_groups": [
                {k: v for k, v in g.items() if k != "smallstate"}
                for g in state_dict["param_groups"]
            ],
        }

    load({k: v for k, v in saved.items() if k != "smallstate"})
    load(without_group_tags(saved))
    for state_dict, message in (
        ({k: v for k, v in without_group_tags(saved).items() if k != "smallstate"}, "non-small"),
        (
            {
                **saved,
                "param_groups": [{**saved["param_groups"][0], "smallstate": "X, state format 1"}],
            },
            "saved by X",
        ),
        (
            {
                **saved,
                "param_groups": [
                    {**saved["param_groups"][0], "smallstate": f"{name}, state format 7"}
                ],
            },
            "format 7",
        ),
    ):
        with pytest.raises(ValueError, match=message):
            make_optimizer(variant, model).load_state_dict(state_dict)


def test_the_group_tag_is_reserved():
    optimizer = make_optimizer("MicroAdam", make_model())
    with pytest.raises(ValueError, match="reserved"):
        optimizer.add_param_group(
            {"params": [torch.nn.Parameter(torch.zeros(4))], "smallstate": "x"}
        )


def test_string_state_is_saved_as_bytes_and_both_forms_load():
    """LDAdam's projection side: torch's flattening takes no strings, so it is saved as UTF-8
    bytes; a state dict holding the string itself (earlier versions) loads the same."""
    model, optimizer = trained("LDAdam-dense")
    saved = copy.deepcopy(optimizer.state_dict())
    sides = {pid: entry["side"] for pid, entry in saved["state"].items() if "side" in entry}
    assert sides and all(v.dtype == torch.uint8 and v.ndim == 1 for v in sides.values())
    as_text = copy.deepcopy(saved)
    for pid, value in sides.items():
        as_text["state"][pid]["side"] = bytes(value.tolist()).decode()
    for state_dict in (saved, as_text):
        target = make_optimizer("LDAdam-dense", model)
        target.load_state_dict(state_dict)
        assert [target.state[p].get("side") for p in model.parameters()] == [
            optimizer.state[p].get("side") for p in model.parameters()
        ]


# ---------------------------------------------------------------------------- FSDP2, 2 ranks
@pytest.fixture(scope="module")
def ranks(tmp_path_factory):
    out = tmp_path_factory.mktemp("dcp")
    return run_workers("dcp_worker.py", out, *SCENARIOS, "consolidated", world=2, timeout=240)


@pytest.mark.parametrize("scenario", SCENARIOS)
def test_fsdp2_dcp_round_trip_resumes_bit_identically(ranks, scenario):
    for rank in (0, 1):
        entry = ranks[rank][scenario]
        assert_same_state(entry["saved_state"], entry["loaded_state"])
        for key, value in entry["continued"].items():
            assert torch.equal(value, entry["resumed"][key]), (rank, key)
        assert any(not torch.equal(v, entry["control"][k]) for k, v in entry["continued"].items())
    assert all(
        torch.equal(v, ranks[1][scenario]["resumed"][k])
        for k, v in ranks[0][scenario]["resumed"].items()
    )


def test_fsdp2_state_is_saved_per_rank(ranks):
    """Each rank's entries are its own: rank 1 holds no state for the 1×64 weight's empty shard."""
    entries = [ranks[rank]["MicroAdam"]["saved_state"] for rank in (0, 1)]
    assert all(k.endswith(".rank0_of_2") for k in entries[0])
    assert all(k.endswith(".rank1_of_2") for k in entries[1])
    assert len(entries[1]) < len(entries[0])


@pytest.mark.parametrize("scenario", ["MicroAdam", "LDAdam-dense", "Adapprox"])
def test_fsdp2_state_of_another_world_size_or_of_several_ranks_is_refused(ranks, scenario):
    for rank in (0, 1):
        entry = ranks[rank][scenario]
        assert f"none for rank{rank}_of_2" in entry["wrong_world_error"]
        assert "world size" in entry["wrong_world_error"]
        assert "several ranks" in entry["several_ranks_error"]
        assert "full_state_dict=True" in entry["several_ranks_error"]


def test_fsdp2_consolidated_state_dict_is_refused_where_it_would_lose_state(ranks):
    """full_state_dict=True keeps rank 0's entries only; broadcast back, rank 0 loads them and
    rank 1 would silently keep its fresh state: it refuses instead."""
    first, second = ranks[0]["consolidated"], ranks[1]["consolidated"]
    assert first["entries"] > 0 and second["entries"] == 0
    assert first["error"] == ""
    assert "was not loaded" in second["error"] and "full_state_dict=True" in second["error"]
