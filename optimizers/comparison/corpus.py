"""The training corpus: the standard library's own ``.py`` files, read as bytes.

Every CPython install carries its standard library sources, so the comparison needs no download.
Files are found under ``sysconfig.get_paths()["stdlib"]``; ``site-packages`` (third-party code that
differs between machines) and the test suites (``test``, ``tests``, ``idle_test`` folders: large,
and stripped by some distributions) are left out, so the corpus is the same on every install of a
given Python version. Each file goes to train or validation by a hash of its relative path, so the
split depends neither on the filesystem's listing order nor on which other files exist.
The test suites are the fine-tuning corpus (:func:`load_test_suite_corpus`): held out from
pretraining, the same language in a shifted style. The vocabulary is the 256 byte values.
"""

from __future__ import annotations

import hashlib
import sysconfig
from dataclasses import dataclass
from pathlib import Path

import torch

VOCAB_SIZE = 256
TEST_DIRS = frozenset({"test", "tests", "idle_test"})
EXCLUDED_DIRS = frozenset({"site-packages", "dist-packages"}) | TEST_DIRS


@dataclass(frozen=True)
class Corpus:
    """Train and validation byte streams (uint8 tensors) and where they came from."""

    train: torch.Tensor
    val: torch.Tensor
    root: str
    train_files: int
    val_files: int

    def stats(self) -> dict:
        """Sizes for the report: files and bytes per split."""
        return {
            "source": self.root,
            "excluded_dirs": sorted(EXCLUDED_DIRS),
            "train_files": self.train_files,
            "val_files": self.val_files,
            "train_bytes": int(self.train.numel()),
            "val_bytes": int(self.val.numel()),
            "vocab_size": VOCAB_SIZE,
        }


def is_validation_file(relative_path: str, val_fraction: float) -> bool:
    """Whether a file goes to validation: SHA-256 of its posix path, as a fraction, < val_fraction.

    Cost: one hash of the path; independent of the file's content and of every other file.
    """
    digest = hashlib.sha256(relative_path.encode("utf-8")).digest()
    return int.from_bytes(digest[:8], "big") / 2.0**64 < val_fraction


def stdlib_sources(root: Path) -> list[Path]:
    """Sorted ``.py`` files under root, outside EXCLUDED_DIRS."""
    return sorted(
        path
        for path in root.rglob("*.py")
        if path.is_file() and not EXCLUDED_DIRS.intersection(path.relative_to(root).parts[:-1])
    )


def load_stdlib_corpus(*, val_fraction: float = 0.05, root: str | None = None) -> Corpus:
    """Read the standard library sources into train/validation byte streams.

    Files are concatenated in sorted path order; cost is one read of every file (about 12 MB
    on CPython 3.11). ``root`` defaults to this interpreter's stdlib folder.
    """
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    base = Path(root or sysconfig.get_paths()["stdlib"])
    return _split(base, stdlib_sources(base), val_fraction, ".py files")


def test_suite_sources(root: Path) -> list[Path]:
    """Sorted ``.py`` files inside the test-suite folders (TEST_DIRS) under root, outside
    site-packages: the fine-tuning corpus, disjoint from :func:`stdlib_sources`."""
    third_party = EXCLUDED_DIRS - TEST_DIRS
    return sorted(
        path
        for path in root.rglob("*.py")
        if path.is_file()
        and TEST_DIRS.intersection(parts := path.relative_to(root).parts[:-1])
        and not third_party.intersection(parts)
    )


def load_test_suite_corpus(*, val_fraction: float = 0.05, root: str | None = None) -> Corpus:
    """The fine-tuning corpus: the standard library's own test suites (``test``, ``tests``,
    ``idle_test`` folders), which the pretraining corpus leaves out, split by file hash as
    :func:`load_stdlib_corpus` does. Test code (assertions, fixtures, literal data) is a shifted
    distribution of the same language. Raises ValueError naming the folder when this Python was
    installed without its test suite (some distributions strip it)."""
    if not 0.0 < val_fraction < 1.0:
        raise ValueError(f"val_fraction must be in (0, 1), got {val_fraction}")
    base = Path(root or sysconfig.get_paths()["stdlib"])
    return _split(base, test_suite_sources(base), val_fraction, "test-suite .py files")


def _split(base: Path, sources: list[Path], val_fraction: float, what: str) -> Corpus:
    splits: dict[bool, list[bytes]] = {False: [], True: []}
    for path in sources:
        relative = path.relative_to(base).as_posix()
        splits[is_validation_file(relative, val_fraction)].append(path.read_bytes())
    if not splits[False] or not splits[True]:
        raise ValueError(
            f"root must hold {what} for both splits, found {len(splits[False])} train and "
            f"{len(splits[True])} validation files under {base}"
        )
    return Corpus(
        train=_as_tensor(splits[False]),
        val=_as_tensor(splits[True]),
        root=str(base),
        train_files=len(splits[False]),
        val_files=len(splits[True]),
    )


def _as_tensor(chunks: list[bytes]) -> torch.Tensor:
    return torch.frombuffer(bytearray(b"".join(chunks)), dtype=torch.uint8)


def random_batch(
    data: torch.Tensor, *, batch_size: int, seq_len: int, generator: torch.Generator
) -> tuple[torch.Tensor, torch.Tensor]:
    """Inputs and next-byte targets, (batch_size, seq_len) int64 each, at uniform random offsets.

    Offsets are drawn on the CPU from ``generator``, so the data order is the same on every device.
    """
    starts = torch.randint(0, data.numel() - seq_len, (batch_size,), generator=generator)
    return _windows(data, starts.to(data.device), seq_len)


def fixed_batches(
    data: torch.Tensor, *, count: int, batch_size: int, seq_len: int
) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """``count`` batches at evenly spaced offsets covering the whole stream (evaluation set)."""
    windows = count * batch_size
    starts = (
        torch.linspace(0, data.numel() - seq_len - 1, windows, dtype=torch.float64)
        .long()
        .to(data.device)
    )
    return [_windows(data, chunk, seq_len) for chunk in starts.split(batch_size)]


def _windows(
    data: torch.Tensor, starts: torch.Tensor, seq_len: int
) -> tuple[torch.Tensor, torch.Tensor]:
    offsets = torch.arange(seq_len + 1, device=data.device)
    tokens = data[starts[:, None] + offsets].long()
    return tokens[:, :-1], tokens[:, 1:]
