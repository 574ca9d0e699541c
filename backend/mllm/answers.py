"""Structured MLLM answers: JSON parsed with ``json`` and validated field by field."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any, Literal

Source = Literal["mllm", "fallback"]
_LEVELS = ("high", "medium", "low")


class AnswerError(ValueError):
    """The MLLM's reply was not the JSON object we asked for."""


@dataclass(frozen=True)
class Entity:
    name: str
    motion: str = ""


@dataclass
class EntitiesResult:
    """Stage I: entities for the end view, the ones most likely to move first."""

    scene_name: str
    visible: list[str]
    entities: list[Entity]
    source: Source = "mllm"
    message: str = ""
    """Why the fallback was used (empty for an MLLM answer); fit for a Progress message."""

    @property
    def inpaint_prompt(self) -> str:
        """The text Y_N for the end-view inpainting: scene name, then the entities in order."""
        names = ", ".join(e.name for e in self.entities)
        if self.scene_name and names:
            return f"{self.scene_name}: {names}"
        return self.scene_name or names

    @property
    def is_fallback(self) -> bool:
        return self.source == "fallback"


@dataclass(frozen=True)
class EntityDescription:
    name: str
    coverage: str
    motion_likelihood: str
    motion: str


@dataclass
class DynamicsResult:
    """Stage II: the dynamics prompt Y_D and the reasoning that led to it."""

    prompt: str
    present: list[str] = field(default_factory=list)
    descriptions: list[EntityDescription] = field(default_factory=list)
    source: Source = "mllm"
    message: str = ""

    @property
    def is_fallback(self) -> bool:
        return self.source == "fallback"


def parse_json_object(text: str | None) -> dict[str, Any]:
    """The first JSON object in a reply; tolerates a Markdown code fence around it."""
    if not text or not text.strip():
        raise AnswerError("empty reply")
    body = text.strip()
    if body.startswith("```"):
        body = body.split("\n", 1)[1] if "\n" in body else ""
        body = body.rsplit("```", 1)[0]
    try:
        value, _ = json.JSONDecoder().raw_decode(body.strip())
    except json.JSONDecodeError as exc:
        raise AnswerError(f"reply is not JSON: {exc.msg} at {exc.pos}") from exc
    if not isinstance(value, dict):
        raise AnswerError(f"reply is JSON {type(value).__name__}, expected an object")
    return value


def _text(obj: dict[str, Any], key: str, required: bool = True) -> str:
    value = obj.get(key)
    if value is None and not required:
        return ""
    if not isinstance(value, str) or (required and not value.strip()):
        raise AnswerError(f"field {key!r} must be a non-empty string")
    return value.strip()


def _list(obj: dict[str, Any], key: str) -> list[Any]:
    value = obj.get(key, [])
    if not isinstance(value, list):
        raise AnswerError(f"field {key!r} must be a list")
    return value


def _level(obj: dict[str, Any], key: str) -> str:
    value = _text(obj, key).lower()
    if value not in _LEVELS:
        raise AnswerError(f"field {key!r} must be one of {_LEVELS}, got {value!r}")
    return value


def parse_entities(text: str | None) -> EntitiesResult:
    obj = parse_json_object(text)
    visible = [v.strip() for v in _list(obj, "visible_entities") if isinstance(v, str) and v.strip()]
    entities = []
    for item in _list(obj, "entities"):
        if isinstance(item, str):
            entities.append(Entity(item.strip()))
        elif isinstance(item, dict):
            entities.append(Entity(_text(item, "name"), _text(item, "motion", required=False)))
        else:
            raise AnswerError("each entity must be a string or an object with a name")
    if not entities:
        raise AnswerError("field 'entities' is empty")
    return EntitiesResult(_text(obj, "scene_name", required=False), visible, entities)


def parse_dynamics(text: str | None) -> DynamicsResult:
    obj = parse_json_object(text)
    present = [p.strip() for p in _list(obj, "present") if isinstance(p, str) and p.strip()]
    descriptions = []
    for item in _list(obj, "descriptions"):
        if not isinstance(item, dict):
            raise AnswerError("each description must be an object")
        descriptions.append(EntityDescription(
            _text(item, "name"), _level(item, "coverage"), _level(item, "motion_likelihood"),
            _text(item, "motion", required=False),
        ))
    return DynamicsResult(_text(obj, "prompt"), present, descriptions)
