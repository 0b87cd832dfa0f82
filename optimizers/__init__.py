"""torch.optim adapters over the randla and compress cores: LDAdam, Adapprox, MicroAdam."""

import importlib

_EXPORTS = {"MicroAdam": "microadam", "LDAdam": "ldadam", "Adapprox": "adapprox"}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name not in _EXPORTS:
        raise AttributeError(f"module 'optimizers' has no attribute {name!r}")
    try:
        module = importlib.import_module(f".{_EXPORTS[name]}", __name__)
    except ModuleNotFoundError as missing:
        if missing.name != f"{__name__}.{_EXPORTS[name]}":
            raise
        raise AttributeError(f"{name} is not available yet") from missing
    return getattr(module, name)
