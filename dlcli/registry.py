"""Name -> object registries; an unknown name is a `BadInput` listing the valid names."""

from __future__ import annotations

import difflib
from typing import Callable, Generic, TypeVar

from dlcli.errors import BadInput

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection filled by the `register` decorator where each entry is defined."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return decorate

    def get(self, name: str) -> T:
        if name not in self._entries:
            raise BadInput(f"unknown {self.kind} {name!r}{suggest(name, self.names())}; valid: {', '.join(self.names())}")
        return self._entries[name]

    def names(self) -> list[str]:
        return sorted(self._entries)

    def items(self) -> list[tuple[str, T]]:
        return sorted(self._entries.items())


def suggest(word: str, choices: list[str]) -> str:
    """' (did you mean 'x'?)' for the nearest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
