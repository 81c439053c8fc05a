"""Named registries for models and quantizers.

One place lists every model preset, quantizer, LM and discriminator, so that the CLI
(`vqtok models`), checkpoints (which store the name) and tests (parametrized over `names()`) agree.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class Registry:
    """A name -> builder table. Builders take keyword overrides and return a component.

    Args:
        kind: What the table holds ("model", "quantizer"), for error messages.
    """

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._builders: dict[str, Callable[..., Any]] = {}

    def register(self, name: str | None = None) -> Callable[[F], F]:
        """A decorator that adds a builder to the table under ``name``.

        Args:
            name: The key; the builder's ``__name__`` when None.

        Returns:
            The decorator, which returns the builder unchanged and raises ValueError when
            the key is already registered.
        """

        def decorate(builder: F) -> F:
            key = name or builder.__name__
            if key in self._builders:
                raise ValueError(f"{self.kind} {key!r} is registered twice")
            self._builders[key] = builder
            return builder

        return decorate

    def get(self, name: str) -> Callable[..., Any]:
        """The builder registered as ``name``.

        Args:
            name: A registered key.

        Returns:
            The builder.

        Raises:
            KeyError: ``name`` is not registered; the message lists the known names.
        """
        try:
            return self._builders[name]
        except KeyError:
            known = ", ".join(sorted(self._builders)) or "none"
            raise KeyError(f"unknown {self.kind} {name!r}; known: {known}") from None

    def create(self, name: str, **overrides: Any) -> Any:
        """Call the builder registered as ``name``.

        Args:
            name: A registered key.
            **overrides: Keyword arguments for the builder.

        Returns:
            What the builder returns.

        Raises:
            KeyError: ``name`` is not registered.
        """
        return self.get(name)(**overrides)

    def names(self) -> list[str]:
        """The registered keys.

        Returns:
            The keys, sorted.
        """
        return sorted(self._builders)

    def __contains__(self, name: object) -> bool:
        return name in self._builders


MODELS = Registry("model")
QUANTIZERS = Registry("quantizer")
LMS = Registry("LM")
DISCRIMINATORS = Registry("discriminator")
register_model = MODELS.register
register_quantizer = QUANTIZERS.register
register_lm = LMS.register
