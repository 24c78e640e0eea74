"""Name -> plug-in class registries (strategies, exemplar selections), timm's `@register_model` shape.

A plug-in is one module in its package that decorates its class with `REGISTRY.register`; the
registry imports every module of the package the first time a name is looked up, so adding a
method or a selection never edits a shared file.
"""
from __future__ import annotations

import importlib
import pkgutil
from typing import ClassVar

from core.errors import UserError


class Plugin:
    """What a registered plug-in shares: its `name` and its own `Settings` dataclass (mounted in the config
    under the plug-in's name; None: no settings), given to it as `self.settings`."""
    name: ClassVar[str] = "base"
    Settings: ClassVar[type | None] = None
    # What a key of its section stood for in a stored config that lacks it, where that is not today's default:
    # the value the key had before it existed (trainer.config.stored_defaults; resumed runs compare with it).
    before_keys: ClassVar[dict] = {}

    def __init__(self, settings=None):
        kind = self.settings_type()
        self.settings = kind() if settings is None and kind is not None else settings

    @classmethod
    def settings_type(cls) -> type | None:
        """The dataclass of its config section: `Settings`, unless the plug-in assembles one (from plug-ins of
        its own, as the optimised selection mounts its objectives' sections)."""
        return cls.Settings

    @classmethod
    def section_keys(cls, settings) -> list[str]:
        """The keys of its own section that a run with these `settings` reads (dotted, relative to the section;
        "" = all of it): what the resume guard compares."""
        return [""]


class Registry:
    def __init__(self, key: str, package: str, skip: tuple[str, ...] = ()):
        self.key = key                      # the config key that names a plug-in, e.g. "strategy.name"
        self.package, self.skip = package, skip
        self._classes: dict[str, type] = {}
        self._loaded = False

    def register(self, cls: type) -> type:
        if self._classes.get(cls.name, cls) is not cls:
            raise ValueError(f"{self.key} '{cls.name}' registered twice")
        self._classes[cls.name] = cls
        return cls

    def unregister(self, name: str) -> None:
        """Forget a plug-in registered at run time (a test's, a notebook's)."""
        self._classes.pop(name, None)

    def _load_builtin(self) -> None:
        if self._loaded:
            return
        self._loaded = True
        pkg = importlib.import_module(self.package)
        for mod in pkgutil.iter_modules(pkg.__path__):
            if mod.name not in self.skip:
                importlib.import_module(f"{self.package}.{mod.name}")

    def known(self) -> list[str]:
        self._load_builtin()
        return list(self._classes)

    def classes(self) -> dict[str, type]:
        self._load_builtin()
        return dict(self._classes)

    def get(self, name: str) -> type:
        self._load_builtin()
        if name not in self._classes:
            raise UserError(f"unknown {self.key} '{name}' (known: {', '.join(sorted(self._classes))})")
        return self._classes[name]
