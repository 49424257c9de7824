"""Strict loading of settings into typed dataclasses.

YAML presets (with `extends:` chains) and `--set section.field=value` overrides become a nested dict; that dict
becomes a dataclass tree field by field, converting each value to its annotated type. Unknown keys and values of
the wrong type are an `InputError` naming the key, never ignored. The dataclasses themselves live in `config.py`.
"""

from __future__ import annotations

import dataclasses
import logging
import types
import typing
from pathlib import Path
from typing import Any, Literal

import yaml

from p2gmed.errors import InputError

log = logging.getLogger(__name__)


def _coerce(value: Any, tp: Any, key: str) -> Any:
    """Convert a YAML/CLI value to the annotated type, or raise InputError naming `key`."""
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin in (typing.Union, types.UnionType):
        if value is None and type(None) in args:
            return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return _coerce(value, arg, key)
            except InputError as exc:
                errors.append(str(exc))
        raise InputError(errors[0] if errors else f"{key}: invalid value {value!r}")
    if origin is Literal:
        if value not in args:
            raise InputError(f"{key} must be one of {', '.join(map(str, args))}; got {value!r}")
        return value
    if origin is tuple:
        if not isinstance(value, (list, tuple)):
            raise InputError(f"{key} must be a list, got {value!r}")
        if len(args) == 2 and args[1] is Ellipsis:
            return tuple(_coerce(v, args[0], key) for v in value)
        if len(value) != len(args):
            raise InputError(f"{key} must have {len(args)} entries, got {list(value)}")
        return tuple(_coerce(v, a, key) for v, a in zip(value, args))
    if tp is bool:
        if isinstance(value, bool):
            return value
        raise InputError(f"{key} must be true or false, got {value!r}")
    if tp is int:
        if isinstance(value, bool) or not isinstance(value, int):
            raise InputError(f"{key} must be an integer, got {value!r}")
        return value
    if tp is float:
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise InputError(f"{key} must be a number, got {value!r}")
        return float(value)
    if tp is str:
        if not isinstance(value, str):
            raise InputError(f"{key} must be a string, got {value!r}")
        return value
    if dataclasses.is_dataclass(tp):
        if not isinstance(value, dict):
            raise InputError(f"{key} must be a mapping, got {value!r}")
        return from_dict(tp, value, key)
    raise InputError(f"{key}: unsupported type {tp}")


#: settings that never had an effect and were deleted; checkpoints and presets that still hold them load
RETIRED_KEYS = ("tune.subset_sampling", "tune.combine")


def from_dict(cls: type, data: dict, prefix: str = "", base: Any = None) -> Any:
    hints = typing.get_type_hints(cls)
    names = {f.name for f in dataclasses.fields(cls)}
    obj = base if base is not None else cls()
    for key, value in data.items():
        full = f"{prefix}.{key}" if prefix else str(key)
        if full in RETIRED_KEYS:
            log.warning("configuration key '%s' has no effect and is ignored", full)
            continue
        if key not in names:
            raise InputError(f"unknown configuration key '{full}'; known keys here: {', '.join(sorted(names))}")
        tp = hints[key]
        if dataclasses.is_dataclass(tp) and isinstance(value, dict):
            from_dict(tp, value, full, getattr(obj, key))
        else:
            setattr(obj, key, _coerce(value, tp, full))
    return obj


def read_yaml(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    if path.is_dir():
        raise InputError(f"configuration file {path} is a folder; give a YAML file (e.g. configs/tiny-cpu.yaml)")
    if not path.is_file():
        raise InputError(f"configuration file {path} does not exist")
    try:
        data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    except UnicodeDecodeError as exc:
        raise InputError(f"configuration file {path} is not UTF-8 text (byte {exc.start}); save it as UTF-8") from None
    except OSError as exc:
        raise InputError(f"configuration file {path} cannot be read ({exc.strerror})") from None
    except yaml.YAMLError as exc:
        raise InputError(f"configuration file {path} is not valid YAML: {exc}".splitlines()[0]) from None
    if not isinstance(data, dict):
        raise InputError(f"configuration file {path} must hold a mapping at the top level")
    parent = data.pop("extends", None)
    if parent is None:
        return data
    if not isinstance(parent, str) or not parent.strip():
        raise InputError(f"configuration file {path}: 'extends' must name another YAML file, got {parent!r}")
    parent_path = (path.parent / parent).resolve()
    if parent_path in seen:
        raise InputError(f"configuration file {path} extends itself through {parent}")
    return merge(read_yaml(parent_path, (*seen, parent_path)), data)


def merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def parse_override(text: str) -> dict:
    """`section.key=value` (value parsed as YAML) -> nested dict."""
    if "=" not in text:
        raise InputError(f"--set expects section.key=value, got '{text}'")
    key, raw = text.split("=", 1)
    try:
        value = yaml.safe_load(raw)
    except yaml.YAMLError:
        value = raw
    out: dict = {}
    node = out
    parts = key.strip().split(".")
    for part in parts[:-1]:
        node = node.setdefault(part, {})
    node[parts[-1]] = value
    return out


def preset_settings(path: str | Path | None, overrides: list[str] | tuple[str, ...]) -> dict:
    """What the preset (with its `extends`) and the overrides set, as a nested dict."""
    data: dict = read_yaml(Path(path)) if path else {}
    for text in overrides:
        data = merge(data, parse_override(text))
    return data


def names_setting(path: str | Path | None, overrides: list[str] | tuple[str, ...], section: str, field: str) -> bool:
    """Whether the preset (with its `extends`) or an override sets `section.field` itself."""
    return field in (preset_settings(path, overrides).get(section) or {})
