"""The prompting agent: an OpenAI-compatible chat endpoint, or template prompts without one."""

from __future__ import annotations

import base64
import io
import logging
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from protocol.messages import SceneText

from .answers import (
    AnswerError,
    DynamicsResult,
    EntitiesResult,
    Entity,
    parse_dynamics,
    parse_entities,
)
from .prompts import DYNAMICS_SYSTEM, DYNAMICS_USER, ENTITIES_SYSTEM, ENTITIES_USER, scene_hint

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class MLLMConfig:
    """Where the MLLM lives. ``base_url`` None means no endpoint: template prompts are used."""

    base_url: str | None = None
    """e.g. ``http://127.0.0.1:8000/v1`` (vLLM, llama.cpp, Ollama) or OpenAI's URL."""
    model: str = "gpt-4o"
    api_key: str = "EMPTY"
    timeout_s: float = 60.0
    max_retries: int = 2
    temperature: float = 0.2
    max_tokens: int = 1024
    json_mode: bool = True
    """Send ``response_format={"type": "json_object"}``; turn off for servers without it."""
    fallback_on_error: bool = True
    """On a failed request or a malformed answer, use the templates and say why (else raise)."""

    @property
    def configured(self) -> bool:
        return bool(self.base_url)


class MLLMError(RuntimeError):
    """The endpoint failed or answered badly and ``fallback_on_error`` is off."""


def image_mime(data: bytes) -> str:
    """MIME type of encoded image bytes, from their signature."""
    if data[:3] == b"\xff\xd8\xff":
        return "image/jpeg"
    if data[:8] == b"\x89PNG\r\n\x1a\n":
        return "image/png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    raise ValueError("image bytes are not JPEG, PNG or WebP")


def image_data_url(image: bytes | np.ndarray) -> str:
    """A ``data:`` URL; arrays (H x W x 3 uint8) are PNG-encoded, bytes keep their format."""
    if isinstance(image, np.ndarray):
        import PIL.Image

        if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise ValueError(f"expected an H x W x 3 uint8 image, got {image.dtype} {image.shape}")
        buf = io.BytesIO()
        PIL.Image.fromarray(image).save(buf, format="PNG")
        image = buf.getvalue()
    mime = image_mime(image)
    return f"data:{mime};base64,{base64.b64encode(image).decode('ascii')}"


class PromptAgent:
    """Writes the Stage I entity list and the Stage II dynamics prompt."""

    def __init__(self, config: MLLMConfig | None = None, client=None) -> None:
        self.config = config or MLLMConfig()
        self._client = client
        if self._client is None and self.config.configured:
            from openai import OpenAI

            self._client = OpenAI(base_url=self.config.base_url, api_key=self.config.api_key,
                                  timeout=self.config.timeout_s,
                                  max_retries=self.config.max_retries)

    @property
    def available(self) -> bool:
        return self._client is not None

    # ------------------------------------------------------------------ Stage I
    def entities(self, image: bytes | np.ndarray, scene: SceneText | None = None,
                 count: int = 10) -> EntitiesResult:
        """Entities that may appear in the end view, most visible and most mobile first."""
        scene = scene or SceneText()
        if not self.available:
            return fallback_entities(scene, "no MLLM endpoint configured: template prompt")
        user = ENTITIES_USER.format(scene_hint=scene_hint(scene.style, scene.content), count=count)
        try:
            return parse_entities(self._ask(ENTITIES_SYSTEM, user, image))
        except (AnswerError, MLLMError) as exc:
            return self._fallback(exc, lambda msg: fallback_entities(scene, msg))

    # ------------------------------------------------------------------ Stage II
    def dynamics_prompt(self, image: bytes | np.ndarray,
                        candidates: EntitiesResult | Sequence[str] | None = None,
                        scene: SceneText | None = None) -> DynamicsResult:
        """The three-step chain of thought (check, describe, write) for the paused view."""
        scene = scene or SceneText()
        names = candidate_names(candidates)
        if not self.available:
            return fallback_dynamics(scene, names, "no MLLM endpoint configured: template prompt")
        listed = "\n".join(f"{k + 1}. {n}" for k, n in enumerate(names)) or "(none)"
        try:
            return parse_dynamics(self._ask(DYNAMICS_SYSTEM, DYNAMICS_USER.format(candidates=listed),
                                            image))
        except (AnswerError, MLLMError) as exc:
            return self._fallback(exc, lambda msg: fallback_dynamics(scene, names, msg))

    # ------------------------------------------------------------------ transport
    def _ask(self, system: str, user: str, image: bytes | np.ndarray) -> str | None:
        import openai

        cfg = self.config
        kwargs = {}
        if cfg.json_mode:
            kwargs["response_format"] = {"type": "json_object"}
        messages = [
            {"role": "system", "content": system},
            {"role": "user", "content": [
                {"type": "text", "text": user},
                {"type": "image_url", "image_url": {"url": image_data_url(image)}},
            ]},
        ]
        try:
            response = self._client.chat.completions.create(
                model=cfg.model, messages=messages, temperature=cfg.temperature,
                max_tokens=cfg.max_tokens, **kwargs,
            )
        except openai.OpenAIError as exc:
            raise MLLMError(f"MLLM request failed: {type(exc).__name__}: {exc}") from exc
        if not response.choices:
            raise MLLMError("MLLM returned no choices")
        return response.choices[0].message.content

    def _fallback(self, exc: Exception, make):
        if not self.config.fallback_on_error:
            raise exc if isinstance(exc, MLLMError) else MLLMError(str(exc))
        message = f"MLLM unusable ({exc}); template prompt"
        logger.warning(message)
        return make(message)


def candidate_names(candidates: EntitiesResult | Sequence[str] | None) -> list[str]:
    if candidates is None:
        return []
    if isinstance(candidates, EntitiesResult):
        return [e.name for e in candidates.entities]
    return [str(c) for c in candidates]


def _content_items(scene: SceneText) -> list[str]:
    return [p.strip() for p in scene.content.split(",") if p.strip()]


def fallback_entities(scene: SceneText, message: str) -> EntitiesResult:
    """Entities from the scene prompt: its comma-separated content items, first as the name."""
    items = _content_items(scene)
    name = items[0] if items else (scene.background or "scene")
    entities = [Entity(i) for i in items[1:]] or [Entity(name)]
    return EntitiesResult(name, [], entities, source="fallback", message=message)


def fallback_dynamics(scene: SceneText, names: Sequence[str], message: str) -> DynamicsResult:
    """A dynamics prompt from the candidates (or the scene content) and the style."""
    movers = list(names)[:3] or _content_items(scene)[1:4]
    sentences = [f"The {n} moves gently." for n in movers]
    head = ", ".join(p for p in (scene.content.strip(), scene.style.strip()) if p)
    prompt = " ".join(([head + "."] if head else []) + sentences
                      + ["Natural motion, the camera stays still."])
    return DynamicsResult(prompt, present=list(movers), source="fallback", message=message)
