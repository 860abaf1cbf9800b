"""What every configuration model shares: the base :class:`Model`, errors that name the path of
a bad value, names checked against a registry, and settings by path (``--set``).

- :class:`Model`: pydantic v2, unknown fields are errors, frozen; :meth:`Model.load` raises
  :class:`~searcher.errors.SearchConfigError` naming the path, e.g.
  ``stages[0].controller.evaluations``.
- :func:`registered` / :func:`enum_of`: a field whose value must be a name in a registry
  (controllers, executors, backends): checked when validated, listed as an enum when the
  JSON schema is made, so a name a plugin declares is valid at once.
- :func:`with_settings`: a copy with ``path.to.field=value`` settings applied (the
  ``--set`` of ``efficientbert run``); :func:`field_rows` lists every field with its value
  and description (``efficientbert config --fields``).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Annotated, Any, TypeVar

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, ValidationError

from distill import metric
from mlpgraph.backends import BACKENDS

from .errors import SearchConfigError

Probability = Annotated[float, Field(ge=0.0, le=1.0)]


def registered(registry: Mapping[str, Any], what: str) -> Callable[[str], str]:
    """A validator: ``name`` must be in ``registry`` (an error lists the declared names)."""
    def check(name: str) -> str:
        if name not in registry:
            raise ValueError(f"unknown {what} {name!r}; choose one of {', '.join(registry)} "
                             "(a plugin may declare more: --plugins)")
        return name
    return check


def enum_of(registry: Mapping[str, Any]) -> Callable[[dict[str, Any]], None]:
    """``json_schema_extra``: the registry's names as an enum, read when the schema is made."""
    def extra(schema: dict[str, Any]) -> None:
        schema["enum"] = list(registry)
    return extra


def _known_metric(name: str | None) -> str | None:
    if name is not None:
        metric(name)  # distill.UnknownMetricError (a ValueError) lists the declared metrics
    return name


#: a metric name declared in distill (``distill.metric``), so its direction is known
MetricName = Annotated[str, AfterValidator(_known_metric)]
#: a compile backend declared with ``@mlpgraph.backends.backend``
BackendName = Annotated[str, AfterValidator(registered(BACKENDS, "backend")),
                        Field(json_schema_extra=enum_of(BACKENDS))]


def _path(loc: tuple[Any, ...]) -> str:
    out, after_index = "", False
    for part in loc:
        if isinstance(part, int):
            if not after_index:  # an int right after an index is a union tag (stage number)
                out += f"[{part}]"
            after_index = not after_index
            continue
        after_index = False
        out += ("." if out else "") + str(part)
    return out


def config_error(err: ValidationError, where: str = "", root: str = "config"
                 ) -> SearchConfigError:
    """The first problem of a pydantic error as a :class:`SearchConfigError` with its path
    (``root`` names a problem of the whole object)."""
    e = err.errors()[0]
    field = _path(((where,) if where else ()) + tuple(e["loc"])) or root
    msg = e["msg"].removeprefix("Value error, ")
    leaf = "input" in e and e["type"] != "missing" and not isinstance(e["input"], dict)
    return SearchConfigError(field, msg + (f" (got {e['input']!r:.80})" if leaf else ""))


class Model(BaseModel):
    """Base of every config model: unknown fields are errors. Constructing one from keyword
    arguments raises pydantic's ``ValidationError`` (a ``ValueError``); :meth:`load` (files,
    dicts) raises :class:`SearchConfigError` naming the path of the bad value."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    @classmethod
    def load(cls, data: Any, where: str = "") -> Any:
        """Validate a dict (e.g. parsed JSON) into this model; raise SearchConfigError."""
        if isinstance(data, dict):
            data = {k: v for k, v in data.items() if k not in ("format", "comment")}
        try:
            return cls.model_validate(data)
        except ValidationError as e:
            raise config_error(e, where, cls.__name__.lower()) from None

    def dump(self) -> dict[str, Any]:
        """A JSON-able dict (tuples become lists)."""
        return self.model_dump(mode="json")

    def but(self, **changes: Any) -> Any:
        """A validated copy with some fields changed."""
        return type(self).load({**self.dump(), **changes})




# ------------------------------------------------------------------ settings by path
M = TypeVar("M", bound=Model)
_STEP = re.compile(r"([^.\[\]]+)|\[(\d+)\]")


def setting_value(text: str) -> Any:
    """A setting's value: parsed as JSON, else the text itself (``3`` is 3, ``cpu`` is "cpu",
    ``null`` is None, ``{"base": "paper"}`` a dict)."""
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def parse_setting(text: str) -> tuple[str, Any]:
    """``"path.to.field=value"`` -> ``(path, value)`` (see :func:`setting_value`)."""
    path, sep, raw = text.partition("=")
    if not sep or not path.strip():
        raise SearchConfigError("--set", f"{text!r} is not PATH=VALUE; e.g. "
                                "stages[0].controller.evaluations=20 or executor.kind=inline")
    return path.strip(), setting_value(raw)


def _steps(path: str) -> list[str | int]:
    steps: list[str | int] = []
    for part in path.split("."):
        found = _STEP.findall(part)
        if not part or "".join(n or f"[{i}]" for n, i in found) != part:
            raise SearchConfigError(path, "is not a field path; write e.g. "
                                    "stages[0].controller.kind or final.seeds")
        steps += [int(n) if n.isdigit() else n if n else int(i) for n, i in found]
    return steps


def _where(steps: Sequence[str | int]) -> str:
    return "".join(f"[{s}]" if isinstance(s, int) else f".{s}" for s in steps).lstrip(".")


def _child(obj: Any, step: str | int, steps: Sequence[str | int]) -> Any:
    """What ``obj`` (a model, list or mapping of the current configuration) holds at
    ``step``; an error names the path and what it allows."""
    where = _where(steps)
    if isinstance(obj, BaseModel):
        fields = type(obj).model_fields
        if step not in fields:
            raise SearchConfigError(where, f"{type(obj).__name__} has no field {step!r}; its "
                                    f"fields: {', '.join(fields)}")
        return getattr(obj, str(step))
    if isinstance(obj, list | tuple):
        if not isinstance(step, int) or not 0 <= step < len(obj):
            raise SearchConfigError(where, f"give an index 0..{len(obj) - 1} (it has "
                                    f"{len(obj)} entries)")
        return obj[step]
    if isinstance(obj, Mapping):
        return obj.get(str(step))
    what = "null" if obj is None else f"a {type(obj).__name__}"
    raise SearchConfigError(_where(steps[:-1]), f"is {what}, not an object: set it as a "
                            f"whole, e.g. --set '{_where(steps[:-1])}={{...}}'")


def _assign(model: Model, data: dict[str, Any], path: str, value: Any) -> None:
    steps = _steps(path)
    obj, node = model, data
    for i, step in enumerate(steps):
        obj = _child(obj, step, steps[:i + 1])
        key = str(step) if isinstance(node, dict) else step
        if i == len(steps) - 1:
            node[key] = value
        elif isinstance(node, dict):
            node = node.setdefault(key, {}) if node.get(key) is None else node[key]
        else:
            node = node[key]


def with_settings(model: M, settings: Sequence[tuple[str, Any]]) -> M:
    """A validated copy of ``model`` with each ``(path, value)`` set (in order; validated
    once, at the end, so settings that only fit together may be given together)."""
    if not settings:
        return model
    data = model.dump()
    for path, value in settings:
        _assign(model, data, path, value)
    return type(model).load(data)


def field_description(cls: type[BaseModel], path: str) -> str:
    """The description of the field at ``path`` (through fields whose defaults are models)."""
    *parents, last = _steps(path)
    for step in parents:
        cls = type(cls.model_fields[str(step)].get_default(call_default_factory=True))
    return cls.model_fields[str(last)].description or ""


def field_rows(model: Model, prefix: str = "") -> Iterator[tuple[str, Any, str]]:
    """``(path, value, description)`` of every field of ``model`` and of the models in it."""
    for name, info in type(model).model_fields.items():
        value, path = getattr(model, name), f"{prefix}{name}"
        if isinstance(value, BaseModel):
            yield from field_rows(value, path + ".")  # type: ignore[arg-type]
        elif isinstance(value, list | tuple) and value and \
                all(isinstance(v, BaseModel) for v in value):
            for i, v in enumerate(value):
                yield from field_rows(v, f"{path}[{i}].")
        else:
            yield path, value, info.description or ""
