"""Which config keys a piece of code reads, recorded on the frozen config classes while it runs.

`ConfigReads` replaces `__getattribute__` of every config dataclass (`vremd.config.Config` and the sections below
it) at class level, so every instance counts, including those rebuilt from dicts on Ray workers and Tune trials.
A read is named by where its value came from, not by the attribute path that reached it:

- an instance the strict builder makes (`load_config`, `config_from_dict`) holds the keys of its place in the
  tree (`data.synthetic`, `pretrain.stills`); one rebuilt from a saved config (`config_from_saved`: a
  checkpoint's) holds no params keys: the file is the stage's dep;
- `dataclasses.replace(obj, **changes)` keeps `obj`'s keys for the fields it copies; a changed field holds the
  key whose read computed the new value (already recorded when it was read), so `pretraining_config`'s
  `train.epochs = pretrain.epochs` counts as `pretrain.epochs`;
- an instance built directly in code takes its class's one place in the tree (None for a class used twice).

Reads that decide nothing an output holds are skipped: the builder's own (vremd/config.py: types, ranges,
cross-field checks, path resolution), dataclass machinery (`asdict` for hashes and MLflow params, `replace`,
`__eq__`, `__repr__`) and anything under a function named `check_*` (a check refuses a run, it never changes
its outputs). In a Ray worker, `install_in_worker` (the runtime env's `worker_process_setup_hook`) records into
the file named by `READS_FILE_ENV`, one key per line.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import typing
from pathlib import Path
from typing import Any, Callable

import vremd.config as config_module

READS_FILE_ENV = "VREMD_TEST_CONFIG_READS"  # a Ray worker appends the keys it reads here
_CONFIG_FILE = Path(config_module.__file__).resolve()
_DATACLASSES_FILE = Path(dataclasses.__file__).resolve()


def _places(cls: type = config_module.Config, prefix: str = "") -> dict[type, list[str]]:
    """Config class -> the dotted prefixes it holds in the tree (SyntheticConfig: data.synthetic, pretrain.stills)."""
    places: dict[type, list[str]] = {cls: [prefix]} if not prefix else {}
    for name, tp in typing.get_type_hints(cls).items():
        if dataclasses.is_dataclass(tp):
            places.setdefault(tp, []).append(prefix + name)
            for sub, where in _places(tp, f"{prefix}{name}.").items():
                places.setdefault(sub, []).extend(where)
    return places


PLACES = _places()  # Config itself: [""]
CLASSES = tuple(PLACES)


def _keys_at(cls: type, prefix: str | None) -> dict[str, str | None]:
    """Field name -> dotted key for an instance of `cls` at `prefix` (None: no params key)."""
    return {f.name: (None if prefix is None else f"{prefix}.{f.name}".lstrip(".")) for f in dataclasses.fields(cls)}


@functools.lru_cache(maxsize=None)
def _machinery(filename: str) -> bool:
    """True for the builder's file, dataclasses' and the code dataclasses generate (`__eq__`: "<string>")."""
    return filename == "<string>" or Path(filename).resolve() in (_CONFIG_FILE, _DATACLASSES_FILE)


def _skipped(frame: Any) -> bool:
    """True for a read by the builder, dataclass machinery, or anything under a `check_*` function."""
    if _machinery(frame.f_code.co_filename):
        return True
    while frame is not None:
        if frame.f_code.co_name.startswith("check_"):
            return True
        frame = frame.f_back
    return False


class ConfigReads:
    """A context manager recording the dotted keys read from configs (`keys`) while it is active; `sink`, if
    given, also receives each key the first time it is read."""

    def __init__(self, sink: Callable[[str], None] | None = None) -> None:
        self.keys: set[str] = set()
        self.unplaced: set[str] = set()  # reads of an instance whose place in the tree is ambiguous
        self._sink = sink
        self._origin: dict[int, tuple[Any, dict[str, str | None]]] = {}  # id -> (instance kept alive, field keys)
        self._saved: dict[type, Any] = {}
        self._busy = False

    def _keys_of(self, obj: Any) -> dict[str, str | None] | None:
        known = self._origin.get(id(obj))
        if known is not None and known[0] is obj:
            return known[1]
        places = PLACES[type(obj)]
        return _keys_at(type(obj), places[0]) if len(places) == 1 else None

    def _note(self, obj: Any, keys: dict[str, str | None]) -> None:
        self._origin[id(obj)] = (obj, keys)

    def _read(self, obj: Any, name: str, value: Any, frame: Any) -> None:
        if self._busy or _skipped(frame):
            return
        self._busy = True
        try:
            keys = self._keys_of(obj)
            if keys is None:
                self.unplaced.add(f"{type(obj).__name__}.{name}")
            elif dataclasses.is_dataclass(value):  # a section: its own reads count, placed here unless known
                if self._origin.get(id(value), (None,))[0] is not value and keys[name] is not None:
                    self._note(value, _keys_at(type(value), keys[name]))
            elif keys[name] is not None and keys[name] not in self.keys:
                self.keys.add(keys[name])
                if self._sink is not None:
                    self._sink(keys[name])
        finally:
            self._busy = False

    def _install(self) -> None:
        recorder = self
        for cls in CLASSES:
            fields = frozenset(f.name for f in dataclasses.fields(cls))

            def getattribute(obj: Any, name: str, _fields: frozenset[str] = fields) -> Any:
                value = object.__getattribute__(obj, name)
                if name in _fields:
                    recorder._read(obj, name, value, sys._getframe(1))
                return value

            self._saved[cls] = cls.__dict__.get("__getattribute__")
            cls.__getattribute__ = getattribute  # type: ignore[method-assign]
        self._saved["build"], self._saved["replace"] = config_module._build, dataclasses.replace
        config_module._build = self._build
        dataclasses.replace = self._replace

    def _build(self, cls: type, values: Any, prefix: str) -> Any:
        obj = self._saved["build"](cls, values, prefix)
        saved = any(f.f_code.co_name == "config_from_saved" for f in _frames(sys._getframe(1)))
        self._note(obj, _keys_at(cls, None if saved else prefix))
        return obj

    def _replace(self, obj: Any, /, **changes: Any) -> Any:
        new = self._saved["replace"](obj, **changes)
        if type(obj) in PLACES:
            old = self._keys_of(obj) or _keys_at(type(obj), None)
            self._note(new, {name: None if name in changes else key for name, key in old.items()})
            for name, value in changes.items():  # a section handed in keeps its own keys
                if dataclasses.is_dataclass(value) and self._keys_of(value) is None:
                    self._note(value, _keys_at(type(value), None))
        return new

    def __enter__(self) -> ConfigReads:
        self._install()
        return self

    def __exit__(self, *exc: Any) -> None:
        for cls in CLASSES:
            if self._saved[cls] is None:
                del cls.__getattribute__
            else:
                cls.__getattribute__ = self._saved[cls]
        config_module._build, dataclasses.replace = self._saved["build"], self._saved["replace"]


def _frames(frame: Any):
    while frame is not None:
        yield frame
        frame = frame.f_back


def install_in_worker() -> None:
    """Ray `worker_process_setup_hook`: record this worker's reads into the file named by `READS_FILE_ENV`."""
    path = os.environ.get(READS_FILE_ENV)
    if not path:
        return

    def append(key: str) -> None:
        with open(path, "a") as out:  # one short line per write: O_APPEND keeps lines whole across processes
            out.write(key + "\n")

    ConfigReads(append).__enter__()  # for the worker's lifetime
