"""Named registries for models and quantizers.

One place lists every model preset and quantizer, so that the CLI (`vqtok models`),
checkpoints (which store the name) and tests (parametrized over `names()`) agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """A name -> builder table. Builders take keyword overrides and return a component."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        def decorate(builder: F) -> F:
            key = name or builder.__name__
            if key in self._builders:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._builders[key] = builder
            return builder

        return decorate

    def get(self, name: str) -> Callable[..., Any]:
        try:
            return self._builders[name]
        except KeyError:
            known = ", ".join(sorted(self._builders)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, **overrides: Any) -> Any:
        return self.get(name)(**overrides)

    def names(self) -> list[str]:
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders


MODELS = Registry("model")
QUANTIZERS = Registry("quantizer")
register_model = MODELS.register
register_quantizer = QUANTIZERS.register
