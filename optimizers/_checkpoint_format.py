"""How a smallstate state dict says who wrote it, in a form torch.distributed.checkpoint keeps.

torch's `get_optimizer_state_dict` / `set_optimizer_state_dict` (and the `dcp.save`/`dcp.load`
round trip built on them) rebuild an optimizer state dict from its `state` and `param_groups`
only: a top-level entry is dropped, a param group's entries are kept (in the flattened form,
those the live optimizer's groups have), and a state value must be a tensor, int, float or dict.
So the tag naming the optimizer and the state format is written twice:

- top level, `"smallstate": {"optimizer": name, "format": STATE_FORMAT}` (what earlier versions
  wrote and read), and
- in every param group under the reserved key `"smallstate"`, as the string
  `"<name>, state format <format>"` (immutable, so no loaded checkpoint can alias it).

A state dict is accepted when every tag it carries names this optimizer and format, and it
carries the top-level tag or a tag in every group; one with none (torch's AdamW, any untagged
dict) is refused. String state values (LDAdam's projection side) are saved as 1-D uint8 tensors
of their UTF-8 bytes, which torch's flattening accepts; both forms load.
"""

from __future__ import annotations

import re
from typing import Any

import torch

STATE_FORMAT = 1
TAG_KEY = "smallstate"
_GROUP_TAG = re.compile(r"(?P<name>\w+), state format (?P<format>\d+)")


def group_tag(name: str) -> str:
    """The tag every param group of optimizer class `name` carries under `TAG_KEY`."""
    return f"{name}, state format {STATE_FORMAT}"


def top_level_tag(name: str) -> dict[str, Any]:
    """The top-level tag of a state dict saved by optimizer class `name`."""
    return {"optimizer": name, "format": STATE_FORMAT}


def _found_tags(state_dict: dict[str, Any]) -> list[tuple[Any, Any]]:
    """(optimizer, format) of every tag in `state_dict`; [] when it is not a tagged dict."""
    found = []
    top = state_dict.get(TAG_KEY)
    if isinstance(top, dict):
        found.append((top.get("optimizer"), top.get("format")))
    groups = state_dict.get("param_groups", [])
    in_groups = [group.get(TAG_KEY) for group in groups if isinstance(group, dict)]
    if not found and (not in_groups or any(tag is None for tag in in_groups)):
        return []
    for tag in in_groups:
        if tag is None:
            continue
        match = _GROUP_TAG.fullmatch(tag) if isinstance(tag, str) else None
        found.append((match["name"], int(match["format"])) if match else (repr(tag), None))
    return found


def check_tags(state_dict: dict[str, Any], name: str) -> None:
    """Refuse (ValueError) a state dict not saved by optimizer class `name` in this format."""
    found = _found_tags(state_dict)
    if not found:
        raise ValueError(f"this state dict was saved by a non-smallstate optimizer, not by {name}")
    for optimizer, _ in found:
        if optimizer != name:
            raise ValueError(f"this state dict was saved by {optimizer}, not by {name}")
    for _, saved_format in found:
        if saved_format != STATE_FORMAT:
            raise ValueError(
                f"state format {saved_format!r} is not supported "
                f"(this version reads format {STATE_FORMAT})"
            )


def encode_text(state: dict[str, Any]) -> dict[str, Any]:
    """`state` with every string value (also inside nested dicts) replaced by a 1-D uint8
    tensor of its UTF-8 bytes."""

    def encoded(value: Any) -> Any:
        if isinstance(value, str):
            return torch.tensor(list(value.encode()), dtype=torch.uint8)
        if isinstance(value, dict):
            return encode_text(value)
        return value

    return {key: encoded(value) for key, value in state.items()}


def decode_text(loaded: dict[str, Any], expected: dict[str, Any]) -> dict[str, Any]:
    """`loaded` with each 1-D uint8 tensor whose `expected` value is a string decoded back.

    Bytes that are not UTF-8 stay a tensor (the state check then names the key)."""
    decoded = dict(loaded)
    for key, value in loaded.items():
        wanted = expected.get(key)
        if (
            isinstance(wanted, str)
            and torch.is_tensor(value)
            and value.dtype == torch.uint8
            and value.ndim == 1
        ):
            try:
                decoded[key] = bytes(value.tolist()).decode()
            except UnicodeDecodeError:
                pass
    return decoded
