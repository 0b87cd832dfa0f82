"""Options that size a parameter's state are fixed once the state exists; loaded state values are
range-checked; strided gradients, and a β1 schedule reaching 0 around a checkpoint."""

import pytest
import torch

from optimizers import Adapprox, LDAdam, MicroAdam


def _param():
    torch.manual_seed(0)
    param = torch.nn.Parameter(torch.randn(48, 64))
    param.grad = torch.randn(48, 64)
    return param


@pytest.mark.parametrize(
    ("cls", "options", "option", "value"),
    [
        (MicroAdam, dict(density=0.25, block_size=256, window=4), "block_size", 128),
        (MicroAdam, dict(density=0.25, block_size=256, window=4), "window", 8),
        (MicroAdam, dict(density=0.25, block_size=256, window=4), "values_dtype", "float32"),
        (MicroAdam, dict(density=0.25, block_size=256, window=4), "error_feedback", "none"),
        (LDAdam, dict(rank=4), "rank", 8),
        (LDAdam, dict(rank=4), "error_feedback", "none"),
        (Adapprox, dict(k_max=8), "k_max", 16),
        (Adapprox, dict(k_max=8), "compressed", False),
    ],
)
def test_changing_a_layout_option_after_the_first_step_is_refused(cls, options, option, value):
    param = _param()
    opt = cls([param], **options)
    opt.step()
    before = param.detach().clone()
    opt.param_groups[0][option] = value
    with pytest.raises(ValueError, match=f"{option} of .* cannot change once its state exists"):
        opt.step()
    assert torch.equal(before, param)
    # The checkpoint taken with the original option still resumes.
    opt.param_groups[0][option] = options.get(option, opt.defaults[option])
    resumed = cls([param], **options)
    resumed.load_state_dict(opt.state_dict())
    resumed.step()


def test_microadam_takes_a_strided_gradient():
    param = _param()
    opt = MicroAdam([param], density=0.25, block_size=256, window=4)
    reference = _param()
    ref_opt = MicroAdam([reference], density=0.25, block_size=256, window=4)
    wide = torch.stack([param.grad, torch.zeros_like(param.grad)], 2).reshape(48, 128)
    param.grad = wide[:, ::2]
    assert not param.grad.is_contiguous()
    opt.step()
    ref_opt.step()
    assert torch.equal(param, reference) and int(opt.state[param]["step"]) == 1


def test_adapprox_checkpoints_load_while_a_schedule_moves_beta1_through_zero():
    param = _param()
    opt = Adapprox([param], k_max=8, betas=(0.9, 0.999))
    opt.step()  # state now holds the first moment
    opt.param_groups[0]["betas"] = (0.0, 0.999)  # a momentum schedule reached 0 after the step
    saved = opt.state_dict()
    resumed = Adapprox([param], k_max=8)
    resumed.load_state_dict(saved)
    resumed.step()  # β1 = 0: the moment is dropped
    assert "exp_avg" not in resumed.state[param]
    resumed.param_groups[0]["betas"] = (0.9, 0.999)
    again = Adapprox([param], k_max=8, betas=(0.0, 0.999))
    again.load_state_dict(resumed.state_dict())  # saved without the moment, β1 > 0 now
    again.step()
    assert "exp_avg" in again.state[param]


@pytest.mark.parametrize(
    ("cls", "options", "key", "value", "message"),
    [
        (Adapprox, dict(k_max=8), "rank", 100, r"'rank' .* must be in \[0, 8\]"),
        (Adapprox, dict(k_max=8), "next_rank", 0, r"'next_rank' .* must be in \[1, 8\]"),
        (Adapprox, dict(k_max=8), "key", -1, "'key' .* must be >= 0"),
        (Adapprox, dict(k_max=8), "step", -1, "'step' .* must be >= 0"),
        (LDAdam, dict(rank=4), "side", "up", "'side' .* must be 'left'"),
        (LDAdam, dict(rank=4), "step", -1, "'step' .* must be >= 0"),
        (MicroAdam, dict(density=0.25, block_size=256), "step", -1, "'step' .* must be >= 0"),
    ],
)
def test_out_of_range_state_values_are_refused_on_load(cls, options, key, value, message):
    param = _param()
    opt = cls([param], **options)
    opt.step()
    saved = opt.state_dict()
    entry = saved["state"][0]
    entry[key] = value if isinstance(value, str) else torch.tensor(value, dtype=entry[key].dtype)
    with pytest.raises(ValueError, match=message):
        cls([param], **options).load_state_dict(saved)
