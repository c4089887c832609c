"""Name -> object registries; an unknown name is a `BadInput` listing the valid names.

A registry opened to plugins (`accept_plugins`: the model specs and the datasets) also
takes, besides its registered names,
- a reference to a class in the user's own code: `pkg.module:Class` (a module on
  PYTHONPATH or installed) or `path/to/file.py:Class` (a file, imported by its path;
  its folder joins the end of `sys.path`, so it may import modules beside it);
- a name that an installed package declares under the registry's entry-point group
  (`[project.entry-points."dlcli.models"] resnet = "mypkg.models:ResNet"`).
Either is imported on first use (never for a registered name, so a built-in costs no
import) and must be a dataclass subclass of the registry's base with a `name` field,
like the registered entries. Every way it can fail is a `BadInput` of one line.
"""

from __future__ import annotations

import difflib
import hashlib
import importlib
import importlib.metadata
import importlib.util
import os
import sys
from pathlib import Path
from typing import Any, Callable, Generic, TypeVar

from dlcli.errors import BadInput

T = TypeVar("T")


class Registry(Generic[T]):
    """A named collection filled by the `register` decorator where each entry is defined."""

    def __init__(self, kind: str):
        self.kind = kind
        self._entries: dict[str, T] = {}
        self._plugin_base: type | None = None
        self._plugin_needs: tuple[str, ...] = ()
        self._entry_point_group: str | None = None
        self._plugins: dict[str, T] = {}  # reference or entry-point name -> the class it names, once imported

    def register(self, name: str) -> Callable[[T], T]:
        def decorate(entry: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = entry
            return entry

        return decorate

    def accept_plugins(self, base: type, entry_point_group: str, needs: tuple[str, ...]) -> None:
        """Also take references to the user's classes and entry points of `entry_point_group`;
        each must subclass `base` and define every attribute in `needs` itself (not only
        inherit the base's)."""
        self._plugin_base, self._entry_point_group, self._plugin_needs = base, entry_point_group, needs

    def get(self, name: str) -> T:
        if name in self._entries:
            return self._entries[name]
        if self._plugin_base is not None:
            if name not in self._plugins:
                found = self._import_plugin(name)
                if found is not None:
                    self._plugins[name] = self._checked(found, name)
            if name in self._plugins:
                return self._plugins[name]
        raise BadInput(f"unknown {self.kind} {name!r}{suggest(name, self.names())}; valid: {', '.join(self.names())}"
                       f"{self._reference_hint(name)}")

    def names(self) -> list[str]:
        """Registered names and the names installed packages declare as entry points."""
        return sorted({*self._entries, *(ep.name for ep in self._entry_points())})

    def items(self) -> list[tuple[str, T]]:
        """(name, entry) of every registered name and entry point (imported now)."""
        return sorted({**{ep.name: self.get(ep.name) for ep in self._entry_points()}, **self._entries}.items())

    # ----- plugins --------------------------------------------------------------------

    def _entry_points(self) -> list[importlib.metadata.EntryPoint]:
        if self._entry_point_group is None:
            return []
        return list(importlib.metadata.entry_points(group=self._entry_point_group))

    def _import_plugin(self, name: str) -> Any:
        """The object `name` refers to (a reference or an entry point), or None when it is neither."""
        if ":" in name:
            where, _, attribute = name.rpartition(":")
            module = _import_file(Path(where)) if is_file_reference(name) else _import_module(where)
            return _attribute(module, attribute)
        for entry_point in self._entry_points():
            if entry_point.name == name:
                try:
                    return entry_point.load()
                except Exception as err:  # noqa: BLE001  (the plugin's own code: reported in one line)
                    raise BadInput(f"{self.kind} {name!r} comes from the entry point {entry_point.value} (package "
                                   f"{_distribution(entry_point)}), whose import raised {_one_line(err)}; fix or "
                                   "reinstall that package") from None
        return None

    def _checked(self, found: Any, name: str) -> Any:
        """`found` if it is a spec class like the registered ones, else `BadInput` saying what it lacks."""
        base = self._plugin_base
        expected = (f"point it at a @dataclasses.dataclass subclass of {base.__module__}.{base.__qualname__} "
                    "with a `name: str` field (see examples/plugin/my_models.py)")
        if not isinstance(found, type):
            raise BadInput(f"{self.kind} {name!r} is {_describe(found)}, not a {self.kind} spec class; {expected}")
        if not issubclass(found, base):
            raise BadInput(f"{self.kind} {name!r} is the class {found.__qualname__}, which does not subclass "
                           f"{base.__qualname__}; {expected}")
        fields = getattr(found, "__dataclass_fields__", {})
        if "name" not in fields:
            problem = "has no `name: str` field" if fields else "is not a dataclass"
            raise BadInput(f"{self.kind} {name!r}: {found.__qualname__} {problem}; {expected}")
        missing = [attr for attr in self._plugin_needs if getattr(found, attr, None) is getattr(base, attr, None)]
        if missing:
            raise BadInput(f"{self.kind} {name!r}: {found.__qualname__} does not define {', '.join(missing)}, which "
                           f"every {self.kind} spec declares; add {'it' if len(missing) == 1 else 'them'} "
                           "(see examples/plugin/my_models.py)")
        return found

    def _reference_hint(self, name: str) -> str:
        if self._plugin_base is None:
            return ""
        if name.endswith(".py"):
            return f"; to use a class from that file, name it too: {name}:ClassName"
        return "; or a class of your own as path/to/file.py:ClassName or package.module:ClassName"


def is_file_reference(name: str) -> bool:
    """Whether `name` refers to a class in a file ('path/to/file.py:Class'), not a module or a registered name."""
    where = name.rpartition(":")[0]
    return bool(where) and (where.endswith(".py") or "/" in where or os.sep in where)


def _import_file(path: Path) -> Any:
    """The module of the Python file at `path`, imported once under a name of its own."""
    path = Path(os.path.abspath(path.expanduser()))
    if not path.is_file():
        raise BadInput(f"plugin file {path} {'is not a file' if path.exists() else 'does not exist'}; check the path before ':' (a relative path is read "
                       "from the config file's folder, or from the working folder for --set)")
    module_name = f"dlcli_plugin_{path.stem}_{hashlib.sha1(str(path).encode()).hexdigest()[:8]}"
    if module_name in sys.modules:
        return sys.modules[module_name]
    spec = importlib.util.spec_from_file_location(module_name, path)
    module = importlib.util.module_from_spec(spec)
    if str(path.parent) not in sys.path:
        sys.path.append(str(path.parent))  # so the file may import modules beside it
    sys.modules[module_name] = module  # dataclasses and type hints look their module up here
    try:
        spec.loader.exec_module(module)
    except Exception as err:  # noqa: BLE001  (the user's code: reported in one line)
        del sys.modules[module_name]
        raise BadInput(f"importing {path} raised {_one_line(err)}; fix that file") from None
    return module


def _import_module(dotted: str) -> Any:
    """The module `dotted` (on sys.path, or installed)."""
    if not all(part.isidentifier() for part in dotted.split(".")):
        raise BadInput(f"{dotted!r} is neither a module name (dotted identifiers) nor the path of a .py file; write "
                       "package.module:ClassName or path/to/file.py:ClassName")
    try:
        return importlib.import_module(dotted)
    except ModuleNotFoundError as err:
        if err.name is not None and (dotted == err.name or dotted.startswith(err.name + ".")):
            local = Path(*dotted.split(".")).with_suffix(".py")
            instead = f"./{local}" if local.is_file() else "path/to/file.py"
            raise BadInput(f"module {dotted!r} not found; put the folder holding it on PYTHONPATH (or install its "
                           f"package), or name the file itself: {instead}:ClassName") from None
        raise BadInput(f"importing {_module_file(dotted)} raised {_one_line(err)}; fix that file") from None
    except Exception as err:  # noqa: BLE001  (the user's code: reported in one line)
        raise BadInput(f"importing {_module_file(dotted)} raised {_one_line(err)}; fix that file") from None


def _module_file(dotted: str) -> str:
    try:
        spec = importlib.util.find_spec(dotted)
    except Exception:  # noqa: BLE001  (its package itself fails to import: name the module)
        spec = None
    return spec.origin if spec is not None and spec.origin else f"module {dotted!r}"


def _attribute(module: Any, dotted: str) -> Any:
    """`module.a.b` for `dotted` 'a.b'."""
    found = module
    for part in dotted.split("."):
        if not hasattr(found, part):
            where = getattr(module, "__file__", None) or module.__name__
            defined = sorted(n for n, v in vars(module).items() if isinstance(v, type) and not n.startswith("_")
                             and getattr(v, "__module__", None) == module.__name__)
            raise BadInput(f"{where} defines no {dotted!r}{suggest(part, defined)}; "
                           f"classes defined there: {', '.join(defined) or 'none'}")
        found = getattr(found, part)
    return found


def _one_line(err: BaseException) -> str:
    """'ValueError: the first line of its message'."""
    lines = str(err).strip().splitlines()
    return f"{type(err).__name__}: {lines[0]}" if lines else type(err).__name__


def _describe(obj: Any) -> str:
    if callable(obj) and hasattr(obj, "__qualname__"):
        return f"the function {obj.__qualname__}"
    return f"a {type(obj).__name__} value"


def _distribution(entry_point: importlib.metadata.EntryPoint) -> str:
    dist = getattr(entry_point, "dist", None)
    return dist.name if dist is not None else "unknown"


def suggest(word: str, choices: list[str]) -> str:
    """' (did you mean 'x'?)' for the nearest choice, or '' when none is close."""
    close = difflib.get_close_matches(word, choices, n=1, cutoff=0.6)
    return f" (did you mean {close[0]!r}?)" if close else ""
