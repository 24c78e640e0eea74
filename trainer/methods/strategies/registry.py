"""Name -> Strategy class registry (`@register` on each strategy class)."""
from __future__ import annotations

from core.errors import UserError

_REGISTRY: dict[str, type] = {}


def register(cls: type) -> type:
    if cls.name in _REGISTRY and _REGISTRY[cls.name] is not cls:
        raise ValueError(f"strategy name '{cls.name}' registered twice")
    _REGISTRY[cls.name] = cls
    return cls


def known() -> list[str]:
    _load_builtin()
    return sorted(_REGISTRY)


def get(name: str) -> type:
    _load_builtin()
    if name not in _REGISTRY:
        raise UserError(f"unknown strategy.name '{name}' (known: {', '.join(sorted(_REGISTRY))})")
    return _REGISTRY[name]


def _load_builtin() -> None:
    import importlib
    import pkgutil

    import trainer.methods.strategies as pkg

    for mod in pkgutil.iter_modules(pkg.__path__):
        if mod.name not in ("base", "registry"):
            importlib.import_module(f"trainer.methods.strategies.{mod.name}")
