"""PromptAgent against a local OpenAI-compatible server, through the real openai client."""

from __future__ import annotations

import base64
import io
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import PIL.Image
import pytest

from backend.mllm import MLLMConfig, MLLMError, PromptAgent, image_data_url, image_mime
from protocol.messages import SceneText

SCENES = Path(__file__).resolve().parents[2] / "shared" / "scenes"


class FakeChatServer:
    """Threaded http.server answering /v1/chat/completions with queued reply texts."""

    def __init__(self) -> None:
        self.replies: list[str] = []
        self.requests: list[dict] = []
        self.fail_next = 0
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args) -> None:
                pass

            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.requests.append({"path": self.path, "body": body})
                if owner.fail_next:
                    owner.fail_next -= 1
                    self._send(500, {"error": {"message": "boom", "type": "server_error"}})
                    return
                reply = owner.replies.pop(0)
                self._send(200, {
                    "id": "chatcmpl-1", "object": "chat.completion", "created": 0,
                    "model": body["model"],
                    "choices": [{"index": 0, "finish_reason": "stop",
                                 "message": {"role": "assistant", "content": reply}}],
                    "usage": {"prompt_tokens": 1, "completion_tokens": 1, "total_tokens": 2},
                })

            def _send(self, code: int, payload: dict) -> None:
                data = json.dumps(payload).encode()
                self.send_response(code)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.02},
                                       daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/v1"

    def sent_image(self, index: int = -1) -> tuple[str, bytes]:
        """(MIME type, decoded bytes) of the image in a recorded request."""
        content = self.requests[index]["body"]["messages"][1]["content"]
        url = next(p["image_url"]["url"] for p in content if p["type"] == "image_url")
        header, data = url.split(",", 1)
        assert header.endswith(";base64")
        return header[len("data:"):-len(";base64")], base64.b64decode(data)


@pytest.fixture()
def server():
    s = FakeChatServer()
    s.thread.start()
    yield s
    s.httpd.shutdown()
    s.httpd.server_close()


def encoded(fmt: str) -> bytes:
    rng = np.random.default_rng(0)
    buf = io.BytesIO()
    PIL.Image.fromarray(rng.integers(0, 255, (8, 8, 3), dtype=np.uint8)).save(buf, format=fmt)
    return buf.getvalue()


ENTITIES_REPLY = json.dumps({
    "scene_name": "River Gorge",
    "visible_entities": ["bridge", "river"],
    "entities": [{"name": "waterfall", "motion": "pouring"}, {"name": "boat", "motion": "drifting"},
                 "heron"],
})
DYNAMICS_REPLY = "```json\n" + json.dumps({
    "present": ["waterfall"],
    "descriptions": [{"name": "waterfall", "coverage": "High", "motion_likelihood": "high",
                      "motion": "water pours down"}],
    "prompt": "The waterfall pours. Mist drifts over the pool.",
}) + "\n```"


@pytest.mark.parametrize("fmt,mime", [("JPEG", "image/jpeg"), ("PNG", "image/png"),
                                      ("WEBP", "image/webp")])
def test_entities_sends_image_with_its_mime_type(server, fmt, mime):
    server.replies.append(ENTITIES_REPLY)
    agent = PromptAgent(MLLMConfig(base_url=server.base_url, model="test-vlm", max_retries=0))
    data = encoded(fmt)
    result = agent.entities(data, SceneText(style="DSLR", content="gorge, river"))
    sent_mime, sent = server.sent_image()
    assert (sent_mime, sent) == (mime, data)
    body = server.requests[-1]["body"]
    assert server.requests[-1]["path"] == "/v1/chat/completions"
    assert body["model"] == "test-vlm"
    assert body["response_format"] == {"type": "json_object"}
    assert "gorge, river" in body["messages"][1]["content"][0]["text"]
    assert not result.is_fallback
    assert [e.name for e in result.entities] == ["waterfall", "boat", "heron"]
    assert result.entities[0].motion == "pouring"
    assert result.inpaint_prompt == "River Gorge: waterfall, boat, heron"


def test_webp_behind_png_name_is_sent_as_webp(server):
    path = SCENES / "15_indoor_webp_named.png"
    if not path.exists():
        pytest.skip("shared scenes not present")
    server.replies.append(ENTITIES_REPLY)
    agent = PromptAgent(MLLMConfig(base_url=server.base_url, max_retries=0))
    agent.entities(path.read_bytes())
    assert server.sent_image()[0] == "image/webp"


def test_dynamics_prompt_three_steps(server):
    server.replies.append(DYNAMICS_REPLY)
    agent = PromptAgent(MLLMConfig(base_url=server.base_url, max_retries=0, json_mode=False))
    frame = np.full((16, 16, 3), 90, np.uint8)
    result = agent.dynamics_prompt(frame, ["waterfall", "boat"])
    assert result.prompt == "The waterfall pours. Mist drifts over the pool."
    assert result.descriptions[0].coverage == "high"
    assert not result.is_fallback
    mime, sent = server.sent_image()
    assert mime == "image/png"
    np.testing.assert_array_equal(np.asarray(PIL.Image.open(io.BytesIO(sent))), frame)
    text = server.requests[-1]["body"]["messages"][1]["content"][0]["text"]
    assert "1. waterfall" in text and "2. boat" in text
    assert "response_format" not in server.requests[-1]["body"]


def test_retries_then_answer(server):
    server.fail_next = 1
    server.replies.append(DYNAMICS_REPLY)
    agent = PromptAgent(MLLMConfig(base_url=server.base_url, max_retries=1, timeout_s=5))
    result = agent.dynamics_prompt(encoded("JPEG"))
    assert len(server.requests) == 2
    assert result.prompt.startswith("The waterfall pours")


def test_malformed_answer_falls_back_with_message(server):
    server.replies.append('{"entities": "not a list"}')
    agent = PromptAgent(MLLMConfig(base_url=server.base_url, max_retries=0))
    result = agent.entities(encoded("PNG"), SceneText(content="Rural countryside, cow, tree"))
    assert result.is_fallback
    assert "entities" in result.message
    assert [e.name for e in result.entities] == ["cow", "tree"]


def test_malformed_answer_raises_without_fallback(server):
    server.replies.append("the waterfall pours")
    agent = PromptAgent(MLLMConfig(base_url=server.base_url, max_retries=0,
                                   fallback_on_error=False))
    with pytest.raises(MLLMError, match="not JSON"):
        agent.dynamics_prompt(encoded("PNG"))


def test_no_endpoint_uses_templates():
    agent = PromptAgent(MLLMConfig())
    assert not agent.available
    scene = SceneText(style="DSLR 35mm landscape",
                      content="Ancient Chinese landscape, mountain, river, bridge")
    entities = agent.entities(encoded("PNG"), scene)
    assert entities.is_fallback and "no MLLM endpoint" in entities.message
    assert entities.inpaint_prompt == "Ancient Chinese landscape: mountain, river, bridge"
    dyn = agent.dynamics_prompt(encoded("PNG"), entities, scene)
    assert dyn.is_fallback
    assert dyn.prompt.startswith("Ancient Chinese landscape, mountain, river, bridge, DSLR")
    assert "The river moves gently." in dyn.prompt


def test_mime_detection_rejects_other_bytes():
    assert image_mime(encoded("JPEG")) == "image/jpeg"
    with pytest.raises(ValueError, match="not JPEG, PNG or WebP"):
        image_mime(b"GIF89a....")
    assert image_data_url(encoded("WEBP")).startswith("data:image/webp;base64,")
