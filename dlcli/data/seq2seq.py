"""Synthetic sequence-to-sequence tasks over short strings, for `transformer_seq2seq`:

- `reverse`: a string of symbols, written backwards;
- `sort`: a string of digits, sorted;
- `addition`: "a+b" for integers of up to `digits` digits, answered with the sum.

Token ids: 0 padding, 1 start of target, 2 end of target, 3.. the task's characters.
Each split is drawn from its own random stream; validation and test examples whose
source also occurs in the training split are dropped, so every evaluated problem is
held out.
"""

from __future__ import annotations

import dataclasses
from typing import ClassVar

import numpy as np

from dlcli.data import DATASETS, DatasetInfo, DatasetSpec, Splits
from dlcli.data.sequences import SPLITS, check_length_range
from dlcli.errors import BadInput
from dlcli.schema import bounded, seed_field

PAD, START, END = 0, 1, 2
SPECIALS = 3


@dataclasses.dataclass
class Seq2SeqConfig(DatasetSpec):
    """Fields every string task shares; subclasses define `alphabet`, `source_length`,
    `target_length` (without the end token) and `problems(rng, n)`."""

    name: str
    n_train: int = bounded(20000, low=1, high=10_000_000)
    n_val: int = bounded(1000, low=1, high=1_000_000)
    n_test: int = bounded(2000, low=1, high=1_000_000)
    seed: int = seed_field()

    def info(self) -> DatasetInfo:
        vocab = SPECIALS + len(self.alphabet)
        return DatasetInfo((self.source_length,), vocab, "sequence_to_sequence", sequence=True, vocab_size=vocab,
                           target_length=self.target_length + 1)

    def encode(self, text: str) -> list[int]:
        """A source string -> token ids; raises BadInput for characters outside the alphabet."""
        unknown = sorted(set(text) - set(self.alphabet))
        if unknown:
            raise BadInput(f"{''.join(unknown)!r} is not in the {self.name} alphabet {self.alphabet!r}; "
                           "use only those characters")
        return [SPECIALS + self.alphabet.index(c) for c in text]

    def decode(self, ids) -> str:
        """Target token ids -> the string before the first end token (specials dropped)."""
        text = []
        for i in ids:
            if i == END:
                break
            if i >= SPECIALS:
                text.append(self.alphabet[i - SPECIALS])
        return "".join(text)

    def arrays(self, sources: list[str], targets: list[str]) -> tuple[dict, np.ndarray]:
        """Strings -> x {"inputs" (n, S), "lengths" (n,), "targets_in" (n, T)}, y (n, T)."""
        n, target_steps = len(sources), self.target_length + 1
        inputs = np.full((n, self.source_length), PAD, np.int32)
        targets_in = np.full((n, target_steps), PAD, np.int32)
        labels = np.full((n, target_steps), -1, np.int32)
        for row, (source, target) in enumerate(zip(sources, targets)):
            source_ids, target_ids = self.encode(source), self.encode(target)
            inputs[row, : len(source_ids)] = source_ids
            targets_in[row, : len(target_ids) + 1] = [START, *target_ids]
            labels[row, : len(target_ids) + 1] = [*target_ids, END]
        lengths = np.array([len(s) for s in sources], np.int32)
        return {"inputs": inputs, "lengths": lengths, "targets_in": targets_in}, labels

    def load(self, data_dir) -> Splits:
        sizes = {"train": self.n_train, "val": self.n_val, "test": self.n_test}
        drawn = {split: self.problems(np.random.default_rng([self.seed, i]), sizes[split])
                 for i, split in enumerate(SPLITS)}
        seen = set(drawn["train"][0])
        parts = [self.arrays(*drawn["train"])]
        for split in ("val", "test"):
            held_out = [(s, t) for s, t in zip(*drawn[split]) if s not in seen]
            if not held_out:
                raise BadInput(f"every {split} problem of {self.name!r} also occurs in training; the task has too few "
                               "distinct problems for these sizes: lower data.n_train or make the problems longer")
            parts.append(self.arrays(*map(list, zip(*held_out))))
        return Splits(self.info(), *parts)


@dataclasses.dataclass
class StringConfig(Seq2SeqConfig):
    """Strings of `min_length` to `max_length` characters drawn from the alphabet."""

    min_length: int = bounded(1, low=1, high=10_000)
    max_length: int = bounded(20, low=1, high=10_000)

    def validate(self, path: str) -> None:
        check_length_range(path, self.min_length, self.max_length)

    @property
    def source_length(self) -> int:
        return self.max_length

    @property
    def target_length(self) -> int:
        return self.max_length

    def strings(self, rng: np.random.Generator, n: int) -> list[str]:
        lengths = rng.integers(self.min_length, self.max_length + 1, n)
        symbols = rng.integers(0, len(self.alphabet), (n, self.max_length))
        return ["".join(self.alphabet[s] for s in row[:length]) for row, length in zip(symbols, lengths)]


@DATASETS.register("reverse")
@dataclasses.dataclass
class ReverseConfig(StringConfig):
    """Write a string of `symbols` different letters backwards."""

    summary: ClassVar[str] = "sequence to sequence: write a string of letters backwards"
    name: str = "reverse"
    symbols: int = bounded(10, low=2, high=26)

    @property
    def alphabet(self) -> str:
        return "abcdefghijklmnopqrstuvwxyz"[: self.symbols]

    def problems(self, rng: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
        sources = self.strings(rng, n)
        return sources, [s[::-1] for s in sources]


@DATASETS.register("sort")
@dataclasses.dataclass
class SortConfig(StringConfig):
    """Sort a string of digits."""

    summary: ClassVar[str] = "sequence to sequence: sort a string of digits"
    name: str = "sort"
    alphabet: ClassVar[str] = "0123456789"

    def problems(self, rng: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
        sources = self.strings(rng, n)
        return sources, ["".join(sorted(s)) for s in sources]


@DATASETS.register("addition")
@dataclasses.dataclass
class AdditionConfig(Seq2SeqConfig):
    """"a+b" -> the sum, for integers of 1 to `digits` digits (the number of digits of
    each operand drawn uniformly, then the operand uniformly among those numbers)."""

    summary: ClassVar[str] = "sequence to sequence: add two integers written as digit strings"
    name: str = "addition"
    alphabet: ClassVar[str] = "0123456789+"
    digits: int = bounded(5, low=1, high=15)

    @property
    def source_length(self) -> int:
        return 2 * self.digits + 1

    @property
    def target_length(self) -> int:
        return self.digits + 1

    def operands(self, rng: np.random.Generator, n: int) -> np.ndarray:
        digits = rng.integers(1, self.digits + 1, n)
        low = np.where(digits == 1, 0, 10 ** (digits - 1))
        return low + (rng.random(n) * (10**digits - low)).astype(np.int64)

    def problems(self, rng: np.random.Generator, n: int) -> tuple[list[str], list[str]]:
        a, b = self.operands(rng, n), self.operands(rng, n)
        return [f"{x}+{y}" for x, y in zip(a, b)], [str(x + y) for x, y in zip(a, b)]
