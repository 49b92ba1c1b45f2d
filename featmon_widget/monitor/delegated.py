"""Attributes of the facade that live on one of its components."""

from __future__ import annotations

from typing import Any


class Delegated:
    """An attribute read from (and, unless `read_only`, written to) the attribute of the same
    name on the owner's component `component`: the facade stays one line per attribute (its
    docstring is the string under the assignment, where documentation tools read it)."""

    def __init__(self, component: str, *, read_only: bool = False) -> None:
        self.component = component
        self.read_only = read_only
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name

    def __get__(self, obj: Any, objtype: type | None = None) -> Any:
        if obj is None:
            return self
        return getattr(getattr(obj, self.component), self.name)

    def __set__(self, obj: Any, value: Any) -> None:
        if self.read_only:
            raise AttributeError(f"{self.name} cannot be set")
        setattr(getattr(obj, self.component), self.name, value)
