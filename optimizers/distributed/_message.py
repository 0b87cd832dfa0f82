"""One contiguous byte message holding several typed arrays, so a rank sends one collective.

Arrays are laid out in the order given, each starting at a multiple of 8 bytes, so typed views
of the message (numpy or CuPy) are aligned and need no copy on either side of the all-gather.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

_ALIGN = 8


class MessageLayout:
    """Offsets of `fields` ((numpy dtype, count) pairs) inside one uint8 message."""

    def __init__(self, fields: Sequence[tuple[np.dtype, int]]) -> None:
        self.fields = [(np.dtype(dtype), int(count)) for dtype, count in fields]
        self.offsets = []
        end = 0
        for dtype, count in self.fields:
            start = -(-end // _ALIGN) * _ALIGN
            self.offsets.append(start)
            end = start + dtype.itemsize * count
        self.nbytes = end

    def split(self, message) -> list:
        """Typed views of a uint8 array of `nbytes` (numpy or CuPy), one per field."""
        if message.size != self.nbytes:
            raise ValueError(f"message must have {self.nbytes} bytes, got {message.size}")
        return [
            message[start : start + dtype.itemsize * count].view(dtype)
            for (dtype, count), start in zip(self.fields, self.offsets, strict=True)
        ]
