"""Data-parallel training with smallstate: compressed DDP comm hooks, replica checks, FSDP2.

See docs/distributed.md.
"""

from .codecs import Quantize, TopK
from .comm_hooks import CommState, compressed_allgather_hook, ring_bytes_sent

__all__ = ["CommState", "Quantize", "TopK", "compressed_allgather_hook", "ring_bytes_sent"]
