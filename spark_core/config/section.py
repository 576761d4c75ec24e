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


class Section(BaseModel):
    model_config = ConfigDict(
        extra="forbid", validate_assignment=True, json_schema_extra=form_schema
    )
    # old field name -> new one: a preset or --set that still uses the old name is told so
    _renamed: ClassVar[dict[str, str]] = {}

    @model_validator(mode="before")
    @classmethod
    def _check_renamed(cls, data: Any) -> Any:
        if isinstance(data, dict):
            for old, new in cls._renamed.items():
                if old in data:
                    raise ValueError(f"{old!r} was renamed to {new!r}")
        return data
