"""torch.optim adapters over the randla and compress cores: LDAdam, Adapprox, MicroAdam."""

from .adapprox import Adapprox
from .ldadam import LDAdam
from .microadam import MicroAdam

__all__ = ["Adapprox", "LDAdam", "MicroAdam"]
