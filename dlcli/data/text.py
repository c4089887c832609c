"""Character-level language modelling on any UTF-8 plain-text file (`data.name: text`).

The vocabulary is the sorted set of characters of the file; the first `1 - val_fraction`
of the text trains, the rest validates (the test split is the validation text: a corpus
has no third part). Every split is cut into windows of `seq_length` characters whose
targets are the next characters; the validation text's last, partial window is padded
with ignored targets (-1), so its loss covers every character exactly once.
"""

from __future__ import annotations

import dataclasses
import functools
from pathlib import Path
from typing import ClassVar

import numpy as np

from dlcli.data import DATASETS, DatasetInfo, DatasetSpec, Splits
from dlcli.errors import BadInput
from dlcli.schema import bounded

TINY_SHAKESPEARE_URL = "https://raw.githubusercontent.com/karpathy/char-rnn/master/data/tinyshakespeare/input.txt"


@DATASETS.register("text")
@dataclasses.dataclass
class TextConfig(DatasetSpec):
    """A plain-text corpus for next-character prediction."""

    summary: ClassVar[str] = "character language modelling on a UTF-8 text file (data.path), a label per character"
    name: str = "text"
    path: str | None = None
    seq_length: int = bounded(128, low=1, high=100_000)
    val_fraction: float = bounded(0.1, low=0.0, high=0.5, low_open=True)

    def validate(self, path: str) -> None:
        if self.path is None:
            raise BadInput(f"{path}.path is empty; set it to a UTF-8 text file (e.g. --set data.path=tinyshakespeare/input.txt "
                           "with --data-dir pointing at the folder that holds it)")

    def info(self, vocab: str | None = None) -> DatasetInfo:
        """The shapes; the vocabulary (and so the number of classes) is known once the
        file is read (`load`) or is given from a run folder's vocab.json."""
        size = len(vocab) if vocab else 0
        return DatasetInfo((self.seq_length,), size, "token_classification", sequence=True, vocab_size=size, vocab=vocab,
                           autoregressive=True)

    def resolve(self, data_dir: Path) -> Path:
        """`path` as given (absolute or from the current directory), else under `data_dir`."""
        given = Path(self.path).expanduser()
        if given.is_absolute() or given.exists():
            return given
        return data_dir / given

    def load(self, data_dir: Path) -> Splits:
        text = read_text(self.resolve(Path(data_dir)), Path(self.path))
        vocab = "".join(sorted(set(text)))
        ids = encode(text, vocab)
        n_train = int(len(ids) * (1.0 - self.val_fraction))
        if n_train <= self.seq_length or len(ids) - n_train < 2:
            raise BadInput(f"{self.path} has {len(ids):,} characters, too few for data.seq_length {self.seq_length} "
                           f"with a {self.val_fraction:g} validation fraction; use a longer text or a smaller seq_length")
        train = windows(ids[:n_train], self.seq_length, keep_partial=False)
        val = windows(ids[n_train:], self.seq_length, keep_partial=True)
        return Splits(self.info(vocab), train, val, val)


@functools.lru_cache(maxsize=4)
def read_text(path: Path, given: Path) -> str:
    """The file's text; `BadInput` if it is missing, empty or not UTF-8."""
    if not path.is_file():
        hint = f" (tiny shakespeare: {TINY_SHAKESPEARE_URL})" if given.name == "input.txt" else ""
        raise BadInput(f"text file {given} was found neither as given nor under the data directory ({path}); "
                       f"put the file there or pass its full path as data.path{hint}")
    try:
        text = path.read_bytes().decode("utf-8")
    except UnicodeDecodeError as err:
        raise BadInput(f"text file {path} is not UTF-8 (byte {err.start} cannot be decoded); convert it to UTF-8 first") from None
    if not text:
        raise BadInput(f"text file {path} is empty; give a file with text in it")
    return text


def encode(text: str, vocab: str) -> np.ndarray:
    """Characters -> int32 ids in `vocab`; `BadInput` naming the first unknown character."""
    lookup = {c: i for i, c in enumerate(vocab)}
    unknown = next((c for c in text if c not in lookup), None)
    if unknown is not None:
        raise BadInput(f"the character {unknown!r} is not in the model's vocabulary of {len(vocab)} characters; "
                       "use only characters that occur in the training text")
    return np.fromiter((lookup[c] for c in text), np.int32, len(text))


def decode(ids, vocab: str) -> str:
    return "".join(vocab[int(i)] for i in ids)


def windows(ids: np.ndarray, length: int, keep_partial: bool) -> tuple[dict, np.ndarray]:
    """Consecutive windows: inputs ids[k L : (k+1) L], targets shifted by one character.
    With `keep_partial` the leftover tail becomes one more window, its missing targets -1."""
    n_full = (len(ids) - 1) // length
    n = n_full + (1 if keep_partial and n_full * length < len(ids) - 1 else 0)
    inputs = np.zeros((n, length), np.int32)
    targets = np.full((n, length), -1, np.int32)
    for k in range(n):
        chunk = ids[k * length: (k + 1) * length + 1]
        inputs[k, : len(chunk) - 1] = chunk[:-1]
        targets[k, : len(chunk) - 1] = chunk[1:]
    lengths = np.full(n, length, np.int32)
    return {"inputs": inputs, "lengths": lengths}, targets
