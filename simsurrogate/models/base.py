"""Base class for every model: records constructor arguments and registers the class.

A checkpoint stores ``{"class": name, "args": {...}}`` next to the weights, so the model can
be rebuilt from the checkpoint alone. Only registered classes (subclasses of
:class:`SurrogateModel` defined in this package or imported by the user) can be rebuilt: a
checkpoint never names arbitrary code to run.
"""

from __future__ import annotations

import functools
import inspect
from typing import Any, ClassVar

from torch import nn


class SurrogateModel(nn.Module):
    """An ``nn.Module`` that remembers how it was built (``self.config``)."""

    registry: ClassVar[dict[str, type[SurrogateModel]]] = {}
    config: dict[str, Any]

    def __init_subclass__(cls, **kwargs: Any) -> None:
        super().__init_subclass__(**kwargs)
        if cls.__name__ in SurrogateModel.registry:
            other = SurrogateModel.registry[cls.__name__]
            if other.__module__ != cls.__module__ or other.__qualname__ != cls.__qualname__:
                raise TypeError(
                    f"model name {cls.__name__!r} is already registered by "
                    f"{other.__module__}.{other.__qualname__}"
                )
        SurrogateModel.registry[cls.__name__] = cls
        init = cls.__init__
        signature = inspect.signature(init)

        @functools.wraps(init)
        def recording_init(self: SurrogateModel, *args: Any, **kw: Any) -> None:
            init(self, *args, **kw)
            if type(self) is cls:
                bound = signature.bind(self, *args, **kw)
                bound.apply_defaults()
                arguments = dict(bound.arguments)
                arguments.pop("self")
                object.__setattr__(self, "config", arguments)

        cls.__init__ = recording_init  # type: ignore[method-assign]

    def spec(self) -> dict[str, Any]:
        """Class name and constructor arguments: everything needed to rebuild the module."""
        return {"class": type(self).__name__, "args": dict(self.config)}


def build_model(spec: dict[str, Any]) -> SurrogateModel:
    """Rebuild a registered model from :meth:`SurrogateModel.spec` output."""
    import simsurrogate.models  # noqa: F401  (registers the built-in models)

    name = spec.get("class")
    if name not in SurrogateModel.registry:
        known = ", ".join(sorted(SurrogateModel.registry))
        raise KeyError(f"unknown model class {name!r}; registered models: {known}")
    return SurrogateModel.registry[name](**spec.get("args", {}))
