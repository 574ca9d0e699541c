"""MLLM prompting (DreamJourney Stage I entities, Stage II dynamics) over any OpenAI-compatible
endpoint, with template prompts when no endpoint is configured."""

from .agent import (
    MLLMConfig,
    MLLMError,
    PromptAgent,
    fallback_dynamics,
    fallback_entities,
    image_data_url,
    image_mime,
)
from .answers import (
    AnswerError,
    DynamicsResult,
    EntitiesResult,
    Entity,
    EntityDescription,
    parse_dynamics,
    parse_entities,
)

__all__ = ["AnswerError", "DynamicsResult", "EntitiesResult", "Entity", "EntityDescription",
           "MLLMConfig", "MLLMError", "PromptAgent", "fallback_dynamics", "fallback_entities",
           "image_data_url", "image_mime", "parse_dynamics", "parse_entities"]
