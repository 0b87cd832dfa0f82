"""Which optimizers the comparison knows, how each is built, and how its state is measured.

Each entry maps a name to a factory ``(params, lr, settings) -> torch.optim.Optimizer``. Every
optimizer receives the same model, data and schedule; only the peak learning rate differs
(:data:`DEFAULT_LR`), because methods that scale updates differently (Adafactor's relative step
size, GaLore's projected-update scale) need a different one. Everything else stays at each
method's published defaults, except that the comparison passes one ``weight_decay`` to all, runs
LDAdam with 4-bit quantized error feedback (its leanest setting) and caps Adapprox's rank at 16
like LDAdam's and GaLore's: at the default k_max = 256 no matrix of these small models would be
factored (the factors would outweigh the dense second moment) and Adapprox would be AdamW.
"""

from __future__ import annotations

import importlib
import importlib.util
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch

import optimizers as smallstate


@dataclass(frozen=True)
class OptimizerSettings:
    """Options every factory receives besides the parameters and the peak learning rate."""

    weight_decay: float = 0.0


Factory = Callable[[list[torch.nn.Parameter], float, OptimizerSettings], torch.optim.Optimizer]

#: Centre of each optimizer's pretraining lr grid (peak lr, before the shared warmup + cosine
#: schedule). AdamW-like methods share AdamW's; Adafactor's lr is a relative step (update size =
#: lr x RMS of the parameter); MicroAdam with its error feedback did best at 1e-3 on the earlier
#: 500-step default run (bench/microadam_feedback_ablation.py). The sweep moves off a centre
#: that turns out to sit at the edge of its grid (see ``sweep.py``).
DEFAULT_LR: dict[str, float] = {
    "adamw": 3e-3,
    "adafactor": 3e-2,
    "ldadam": 3e-3,
    "adapprox": 3e-3,
    "microadam": 1e-3,
    "microadam-noef": 3e-3,
    "microadam-alpha": 1e-3,
    "microadam-window": 1e-3,
    "galore": 1e-2,
}

#: Fine-tuning starts from a trained model: each grid is centred a factor 3 lower.
FINETUNE_LR: dict[str, float] = {name: lr / 3 for name, lr in DEFAULT_LR.items()}

#: The densifying factor of the "microadam-alpha" variant (the reference's own example value).
MICROADAM_ALPHA = 0.1


def _adamw(params, lr: float, settings: OptimizerSettings) -> torch.optim.Optimizer:
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=settings.weight_decay, fused=True)
    except RuntimeError as error:
        warnings.warn(f"fused AdamW unavailable ({error}); using the default one", stacklevel=2)
        return torch.optim.AdamW(params, lr=lr, weight_decay=settings.weight_decay)


def _adafactor(params, lr: float, settings: OptimizerSettings) -> torch.optim.Optimizer:
    return torch.optim.Adafactor(params, lr=lr, weight_decay=settings.weight_decay)


#: The library's own optimizers: registry name -> (class name on ``optimizers``, extra options).
SMALLSTATE_CLASSES: dict[str, tuple[str, dict]] = {
    "ldadam": ("LDAdam", {"error_feedback": "q4"}),
    "adapprox": ("Adapprox", {"k_max": 16}),
    "microadam": ("MicroAdam", {}),
    # MicroAdam with the top-k remainder dropped instead of fed back (docs/microadam.md).
    "microadam-noef": ("MicroAdam", {"error_feedback": "none"}),
    # The reference implementation's densifying option, labelled there for pre-training.
    "microadam-alpha": ("MicroAdam", {"alpha": MICROADAM_ALPHA}),
    # Moments normalized by the weight the window holds, 1 - beta^min(t, m) (opt-in variant).
    "microadam-window": ("MicroAdam", {"bias_correction": "window"}),
}


def _smallstate(name: str) -> Factory:
    class_name, options = SMALLSTATE_CLASSES[name]

    def build(params, lr: float, settings: OptimizerSettings) -> torch.optim.Optimizer:
        optimizer_class = getattr(smallstate, class_name)
        return optimizer_class(params, lr=lr, weight_decay=settings.weight_decay, **options)

    return build


def _galore(params, lr: float, settings: OptimizerSettings) -> torch.optim.Optimizer:
    galore_torch = importlib.import_module("galore_torch")
    params = list(params)
    matrices = [p for p in params if p.dim() == 2]
    others = [p for p in params if p.dim() != 2]
    groups = [
        {"params": others},
        {"params": matrices, "rank": 16, "update_proj_gap": 200, "scale": 0.25, "proj_type": "std"},
    ]
    return galore_torch.GaLoreAdamW(groups, lr=lr, weight_decay=settings.weight_decay)


REGISTRY: dict[str, Factory] = {
    "adamw": _adamw,
    "adafactor": _adafactor,
    **{name: _smallstate(name) for name in SMALLSTATE_CLASSES},
    "galore": _galore,
}

#: What runs when --optimizers is not given (galore joins when its package is installed).
DEFAULT_OPTIMIZERS = (
    "adamw",
    "adafactor",
    "ldadam",
    "adapprox",
    "microadam",
    "microadam-noef",
    "microadam-alpha",
    "microadam-window",
    "galore",
)

#: Optimizers that run in one task only (the densifying option is the reference's pre-training
#: setting); every other optimizer runs in both.
TASK_ONLY: dict[str, str] = {"microadam-alpha": "pretrain"}


def runs_in(name: str, task: str) -> bool:
    """Whether optimizer ``name`` belongs to ``task`` ('pretrain' or 'finetune')."""
    return TASK_ONLY.get(name, task) == task


def describe(name: str) -> str:
    """One line: the class and the options the comparison sets (for the table's legend)."""
    if name in SMALLSTATE_CLASSES:
        class_name, options = SMALLSTATE_CLASSES[name]
        shown = ", ".join(f"{key}={value!r}" for key, value in options.items())
        return f"smallstate {class_name}({shown})"
    return {
        "adamw": "torch.optim.AdamW(fused=True)",
        "adafactor": "torch.optim.Adafactor",
        "galore": "galore_torch.GaLoreAdamW(rank=16)",
    }[name]


def unavailable_reason(name: str) -> str | None:
    """Why ``name`` cannot run here, or None when it can (GaLore needs ``galore_torch``)."""
    if name not in REGISTRY:
        raise ValueError(f"optimizer must be one of {sorted(REGISTRY)}, got {name!r}")
    if name == "galore" and importlib.util.find_spec("galore_torch") is None:
        return "galore_torch is not installed (pip install galore-torch)"
    return None


def build_optimizer(
    name: str, params: Iterable[torch.nn.Parameter], *, lr: float, settings: OptimizerSettings
) -> torch.optim.Optimizer:
    """Construct optimizer ``name`` over ``params`` with peak learning rate ``lr``."""
    return REGISTRY[name](list(params), lr, settings)


def state_nbytes(optimizer: torch.optim.Optimizer) -> int:
    """Bytes of optimizer state.

    Uses ``optimizer.state_nbytes()`` when the optimizer has it (the smallstate contract): an
    int, or an object whose ``.total`` is the int. Otherwise sums the bytes of every tensor held in
    ``optimizer.state``, including tensors inside lists, dicts and plain objects (GaLore keeps its
    projection matrix in a projector object).
    """
    reported = getattr(optimizer, "state_nbytes", None)
    if callable(reported):
        value = reported()
        return int(value if isinstance(value, int) else value.total)
    return sum(_tensor_bytes(state) for state in optimizer.state.values())


def _tensor_bytes(value: object, depth: int = 0) -> int:
    if isinstance(value, torch.Tensor):
        return value.nbytes
    if depth > 3:
        return 0
    if isinstance(value, dict):
        children = value.values()
    elif isinstance(value, list | tuple):
        children = value
    else:
        children = vars(value).values() if hasattr(value, "__dict__") else ()
    return sum(_tensor_bytes(child, depth + 1) for child in children)
