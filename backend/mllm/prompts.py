"""Our wording of the two MLLM requests (paper sec. IV-A, IV-B and its appendix)."""

from __future__ import annotations

ENTITIES_SYSTEM = (
    "You direct shots for a video generator that flies a camera through one scene. "
    "You look at the current view and plan what the camera will discover next. "
    "Answer with one JSON object and nothing else."
)

ENTITIES_USER = """This is the current view. {scene_hint}
Step 1: list the entities you can see in it.
Step 2: imagine the view a little further along the flight. Propose {count} entities that \
would plausibly appear there and fit the style and content of this scene. Favour things that \
visibly move (water, animals, vehicles, smoke, foliage in wind, people) and order the list so \
the most visually prominent, most likely to move come first.
Reply as JSON:
{{"scene_name": "<a short name for the scene>",
  "visible_entities": ["<entity>", ...],
  "entities": [{{"name": "<entity>", "motion": "<how it moves, a few words>"}}, ...]}}"""

DYNAMICS_SYSTEM = (
    "You write prompts for an image-to-video model that must animate a still frame: things in "
    "the frame move, the camera stays still. Reason in three steps, then answer with one JSON "
    "object and nothing else."
)

DYNAMICS_USER = """Candidate moving entities, from when this view was planned:
{candidates}
Step 1 (check): go through the candidates one by one and decide whether each is really in \
this image. If none of them is, find moving entities in the image yourself.
Step 2 (describe): for each entity that is in the image, rate how much of the frame it covers \
(high / medium / low), how likely it is to move strongly in the next few seconds \
(high / medium / low), and say how it would move.
Step 3 (prompt): write one short video prompt that describes the motion, the most prominent \
and most mobile entities first, in plain present-tense sentences.
Reply as JSON:
{{"present": ["<entity>", ...],
  "descriptions": [{{"name": "<entity>", "coverage": "high|medium|low",
                     "motion_likelihood": "high|medium|low", "motion": "<how it moves>"}}, ...],
  "prompt": "<the final video prompt>"}}"""


def scene_hint(style: str, content: str) -> str:
    """One sentence that tells the MLLM what the scene is meant to be, if we know."""
    parts = [p.strip() for p in (content, style) if p and p.strip()]
    if not parts:
        return ""
    return "The scene is meant to be: " + "; ".join(parts) + "."
