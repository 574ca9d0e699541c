"""What a preset's models need from the Hugging Face hub: where each is, whether it is cached,
and the download (``dreamjourney models fetch``).

A role's ``source`` is a hub repository (diffusers pipeline or transformers model), a local
folder (nothing to fetch), or one checkpoint file (a URL
``https://huggingface.co/ORG/NAME/blob/REV/FILE``) whose other components come from its
``config`` repository: there only the configs and the parts the file lacks are fetched.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from configs import model_names, model_path

from .spec import ModelSpec, load_specs

_FILE_URL = re.compile(r"^https://huggingface\.co/(?P<repo>[^/]+/[^/]+)/(?:blob|resolve)/"
                       r"(?P<rev>[^/]+)/(?P<file>.+)$")
SINGLE_FILE_PARTS = ("transformer", "unet", "vae")
"""Components a single-file checkpoint carries (their weights are not fetched from the config
repository)."""


class FetchError(RuntimeError):
    """A download that cannot happen (offline, unknown repository, no space); one line."""


@dataclass(frozen=True)
class Download:
    """One thing to fetch: a whole repository (filtered) or one file of it."""

    role: str
    repo: str
    kind: Literal["diffusers", "transformers", "file"]
    """``diffusers`` (a pipeline repository), ``transformers`` (a model) or ``file``."""
    filename: str | None = None
    """The file of a ``file`` download (None for the others)."""
    revision: str | None = None
    ignore: tuple[str, ...] = ()
    variant: str | None = None

    @property
    def label(self) -> str:
        return f"{self.repo}/{self.filename}" if self.filename else self.repo


def preset_specs(name: str) -> dict[str, ModelSpec]:
    path = model_path(name)
    if not path.is_file():
        raise FetchError(f"no preset {name!r}; known: {', '.join(model_names())}")
    return load_specs(path)


def downloads(specs: dict[str, ModelSpec]) -> list[Download]:
    """What the roles of one preset need from the hub (local folders need nothing)."""
    out: list[Download] = []
    for role, spec in specs.items():
        if Path(spec.source).expanduser().exists():
            continue
        kind: Literal["diffusers", "transformers"] = (
            "diffusers" if role in ("video", "inpaint") else "transformers")
        match = _FILE_URL.match(spec.source)
        if match:
            out.append(Download(role, match["repo"], "file", match["file"], match["rev"]))
            if spec.config and not Path(spec.config).expanduser().exists():
                ignore = tuple(f"{part}/*.safetensors" for part in SINGLE_FILE_PARTS)
                out.append(Download(role, spec.config, kind, ignore=ignore))
        elif spec.single_file:
            raise FetchError(f"{role}: {spec.source} is neither a local file nor a hub URL")
        else:
            out.append(Download(role, spec.source, kind, variant=spec.variant))
    return out


IGNORED = ("*.bin", "*.pth", "*.pt", "*.ckpt", "*.msgpack", "*.h5", "*.onnx*", "*.gguf",
           "*.mp4", "*.gif", "*.png", "*.jpg")
"""Never fetched: other weight formats than safetensors, and media."""


def is_cached(download: Download) -> bool:
    """Whether the hub cache already holds it (a repository: its index file's snapshot)."""
    from huggingface_hub import try_to_load_from_cache

    if download.filename is not None:  # kind "file"
        name = download.filename
    else:
        name = "model_index.json" if download.kind == "diffusers" else "config.json"
    found = try_to_load_from_cache(download.repo, name, revision=download.revision)
    return isinstance(found, str)


def fetch(download: Download) -> str:
    """Download into the hub cache (huggingface_hub's progress bars); the local path."""
    from huggingface_hub import hf_hub_download, snapshot_download
    from huggingface_hub.errors import HfHubHTTPError, LocalEntryNotFoundError

    try:
        if download.filename is not None:  # kind "file"
            return hf_hub_download(download.repo, download.filename, revision=download.revision)
        if download.kind == "diffusers" and not download.ignore:
            from diffusers import DiffusionPipeline  # fetches what from_pretrained reads

            return DiffusionPipeline.download(download.repo, revision=download.revision,
                                              variant=download.variant)
        return snapshot_download(download.repo, revision=download.revision,
                                 ignore_patterns=[*IGNORED, *download.ignore])
    except LocalEntryNotFoundError:
        raise FetchError(f"cannot reach the Hugging Face hub to fetch {download.label} "
                         "(offline, or HF_HUB_OFFLINE is set)") from None
    except HfHubHTTPError as exc:
        first = str(exc).splitlines()[0] if str(exc) else type(exc).__name__
        raise FetchError(f"{download.label}: {first}") from None
    except OSError as exc:
        raise FetchError(f"{download.label}: {exc.strerror or exc}") from None
