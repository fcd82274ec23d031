"""YAML and dict I/O for the frozen config dataclasses of every stage (one definition, torch-free)."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import yaml

from massshift.rundir import write_text


class ConfigIO:
    """``to_dict`` / ``from_dict`` / ``from_yaml`` / ``to_yaml`` for a frozen config dataclass."""

    def to_dict(self) -> dict[str, Any]:
        """All fields as plain values (for config.yaml; tuples become lists)."""
        def plain(v: Any) -> Any:
            return [plain(x) for x in v] if isinstance(v, (tuple, list)) else v

        return {f.name: plain(getattr(self, f.name)) for f in dataclasses.fields(self)}  # type: ignore[arg-type]

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Any:
        """Build the config from a mapping; unknown keys are an error naming the valid ones."""
        names = [f.name for f in dataclasses.fields(cls)]  # type: ignore[arg-type]
        unknown = sorted(set(data) - set(names))
        if unknown:
            raise ValueError(f"unknown {cls.__name__} setting(s) {unknown}; valid settings are {names}")
        return cls(**dict(data))

    @classmethod
    def from_yaml(cls, path: str | os.PathLike[str]) -> Any:
        """Load the config from a YAML mapping of field names to values."""
        data = yaml.safe_load(Path(path).read_text(encoding="utf-8")) or {}
        if not isinstance(data, Mapping):
            raise ValueError(f"{path}: expected a YAML mapping of {cls.__name__} settings")
        return cls.from_dict(data)

    def to_yaml(self, path: str | os.PathLike[str]) -> Path:
        """Write the config as YAML (atomically)."""
        return write_text(path, yaml.safe_dump(self.to_dict(), sort_keys=False))


def help_field(default: Any = dataclasses.MISSING, *, help: str, **kwargs: Any) -> Any:
    """A dataclass field carrying its help text: the one place an option is documented; the CLI reads it
    with ``field_help``. ``default_factory`` and other ``dataclasses.field`` arguments pass through."""
    return dataclasses.field(default=default, metadata={"help": help}, **kwargs)


def field_help(cls: Any, name: str) -> str:
    """The help text of field ``name`` of config dataclass ``cls`` (an error if the field has none)."""
    for f in dataclasses.fields(cls):
        if f.name == name:
            if "help" not in f.metadata:
                raise KeyError(f"{cls.__name__}.{name} has no help text: declare it with help_field(...)")
            return str(f.metadata["help"])
    raise KeyError(f"{cls.__name__} has no field {name!r}")
