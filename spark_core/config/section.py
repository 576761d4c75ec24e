"""The base of every config section: strict fields, renamed-field errors, and the JSON schema
shaped for the Prefect UI's form."""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import BaseModel, ConfigDict, model_validator


class ConfigError(ValueError):
    """A config that cannot be used, with the file and field path that are wrong."""


def form_schema(schema: dict[str, Any]) -> None:
    """Shape a section's JSON schema for the Prefect UI's form (schema metadata only; the
    pydantic model still validates): an optional field (``X | None``, default None) is shown
    as a plain X input that may be left empty, not as an "X | None" type switch, so its
    validation message names the rule (e.g. "must be > 0"). Descriptions stay as written:
    the UI that ``spark server`` serves (Prefect's V2) shows them as plain text, so a
    ``<runs_dir>`` placeholder reads as itself (an escaped one would show ``&lt;``)."""
    for prop in schema.get("properties", {}).values():
        branches = prop.get("anyOf", [])
        kept = [b for b in branches if b.get("type") != "null"]
        if len(kept) == 1 and len(branches) == 2 and prop.get("default", 0) is None:
            del prop["anyOf"], prop["default"]
            prop.update({k: v for k, v in kept[0].items() if k not in prop})


def choices(values: tuple[str, ...]) -> dict[str, Any]:
    """Form metadata for a list of known values: a multi-select without repeats."""
    return {"items": {"type": "string", "enum": list(values)}, "uniqueItems": True}


def default_of(section: type[BaseModel], name: str) -> Any:
    """The default of one field of a config section: what a library class (the sandbox's
    limits, a backend, a request) takes as its own default, so the value is written once, in
    the section that documents it."""
    return section.model_fields[name].get_default(call_default_factory=True)


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, json_schema_extra=form_schema
    )
    # old field name -> its new name in the same section: a preset or --set that still uses
    # the old name is told so
    _renamed: ClassVar[dict[str, str]] = {}
    # old field name -> the full path it moved to (into a sub-section): told the same way
    _moved: ClassVar[dict[str, str]] = {}
    # field -> {old value: new value}: a renamed choice of a Literal field (or of an item of a
    # list field), told the same way
    _renamed_values: ClassVar[dict[str, dict[str, str]]] = {}

    @model_validator(mode="before")
    @classmethod
    def _check_renamed(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            return data
        told = [
            f"{old!r} was renamed to {new!r}" for old, new in cls._renamed.items() if old in data
        ]
        told += [f"{old!r} moved to {new!r}" for old, new in cls._moved.items() if old in data]
        for name, values in cls._renamed_values.items():
            given = data.get(name)
            items = given if isinstance(given, list) else [given]
            told += [
                f"{name}: {item!r} was renamed to {values[item]!r}"
                for item in items
                if isinstance(item, str) and item in values
            ]
        if told:
            raise ValueError("; ".join(told))
        return data
