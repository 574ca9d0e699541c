"""The heads-up display: status line, one progress bar per running job, fps, key help (F1).

Text is rendered with Pillow into small RGBA textures (cached by content), which is robust on
every GL driver, llvmpipe included; bars are flat quads. Layout is in window pixels.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import moderngl
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from explorer.renderer import OverlayRenderer


class TextCache:
    """RGBA textures of text blocks, keyed by (text, size); least recently used are freed."""

    def __init__(self, ctx: moderngl.Context, capacity: int = 64):
        self.ctx = ctx
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int], moderngl.Texture] = OrderedDict()
        self._fonts: dict[int, ImageFont.ImageFont] = {}

    def font(self, size: int) -> ImageFont.ImageFont:
        if size not in self._fonts:
            try:
                self._fonts[size] = ImageFont.load_default(size=size)
            except TypeError:  # Pillow without FreeType: fixed bitmap font
                self._fonts[size] = ImageFont.load_default()
        return self._fonts[size]

    def get(self, text: str, size: int = 16) -> moderngl.Texture:
        return self._cached((text, size), lambda: render_text(text, self.font(size)))

    def table(self, rows: tuple[tuple[str, str], ...], size: int = 16) -> moderngl.Texture:
        """A two-column table (keys, what they do), the second column aligned by pixels."""
        return self._cached((rows, size), lambda: render_table(rows, self.font(size)))

    def _cached(self, key, make) -> moderngl.Texture:
        tex = self._items.get(key)
        if tex is not None:
            self._items.move_to_end(key)
            return tex
        tex = self.ctx.texture(*make())
        tex.filter = moderngl.NEAREST, moderngl.NEAREST
        self._items[key] = tex
        while len(self._items) > self.capacity:
            _, old = self._items.popitem(last=False)
            old.release()
        return tex


def render_text(text: str, font: ImageFont.ImageFont, pad: int = 4) -> tuple:
    """(size, components, bytes) of white text with a dark outline on transparent pixels."""
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    left, top, right, bottom = probe.multiline_textbbox((0, 0), text, font=font, stroke_width=1)
    w, h = max(1, right - left + 2 * pad), max(1, bottom - top + 2 * pad)
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(img).multiline_text(
        (pad - left, pad - top), text, font=font, fill=(255, 255, 255, 255),
        stroke_width=1, stroke_fill=(0, 0, 0, 255),
    )
    return (w, h), 4, np.asarray(img).tobytes()


def render_table(rows: tuple[tuple[str, str], ...], font: ImageFont.ImageFont, pad: int = 6,
                 gap: int = 24) -> tuple:
    """(size, components, bytes) of a two-column table: keys bold-ish yellow, text white."""
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))

    def box(text: str) -> tuple[int, int]:
        left, top, right, bottom = probe.textbbox((0, 0), text, font=font, stroke_width=1)
        return right - left, bottom - top

    key_w = max((box(k)[0] for k, _ in rows), default=0)
    text_w = max((box(t)[0] for _, t in rows), default=0)
    line_h = max((box(k + t)[1] for k, t in rows), default=0) + 6
    w, h = 2 * pad + key_w + gap + text_w, 2 * pad + line_h * len(rows)
    img = Image.new("RGBA", (max(1, w), max(1, h)), (0, 0, 0, 0))
    draw = ImageDraw.Draw(img)
    for i, (keys, does) in enumerate(rows):
        y = pad + i * line_h
        draw.text((pad, y), keys, font=font, fill=(255, 220, 90, 255), stroke_width=1,
                  stroke_fill=(0, 0, 0, 255))
        draw.text((pad + key_w + gap, y), does, font=font, fill=(255, 255, 255, 255),
                  stroke_width=1, stroke_fill=(0, 0, 0, 255))
    return img.size, 4, np.asarray(img).tobytes()


@dataclass
class JobBar:
    label: str
    fraction: float = 0.0


@dataclass
class HudState:
    status: str = ""
    fps: float = 0.0
    jobs: dict[str, JobBar] = field(default_factory=dict)
    show_help: bool = False
    help_rows: tuple[tuple[str, str], ...] = ()
    """The F1 table: (keys, what they do) per row."""
    recording: bool = False
    extra: str = ""
    """A second line under the status (e.g. annotation mode)."""


class Hud:
    """Draws a :class:`HudState` with an :class:`OverlayRenderer`."""

    def __init__(self, ctx: moderngl.Context, overlay: OverlayRenderer, font_size: int = 16):
        self.overlay = overlay
        self.text = TextCache(ctx)
        self.font_size = font_size

    def _label(self, text: str, x: float, y: float, size: int | None = None) -> tuple[int, int]:
        tex = self.text.get(text, size or self.font_size)
        self.overlay.image(tex, x, y, tex.width, tex.height)
        return tex.width, tex.height

    def draw(self, state: HudState, width: int, height: int) -> None:
        line = self.font_size + 10
        self.overlay.rect(0, height - 2 * line - 6, width, 2 * line + 6, (0.0, 0.0, 0.0, 0.45))
        if state.status:
            self._label(state.status, 8, height - 2 * line - 2)
        if state.extra:
            self._label(state.extra, 8, height - line - 2)
        fps_text = f"{state.fps:5.1f} fps"
        tex = self.text.get(fps_text, self.font_size)
        self.overlay.image(tex, width - tex.width - 8, 6, tex.width, tex.height)
        if state.recording:
            self.overlay.rect(width - tex.width - 30, 12, 14, 14, (0.9, 0.1, 0.1, 1.0))
        self._draw_bars(state, width)
        if state.show_help and state.help_rows:
            room = height - 2 * line - 24  # above the status lines
            for size in (self.font_size, 14, 12, 10):
                help_tex = self.text.table(state.help_rows, size)
                if help_tex.height <= room:
                    break
            x = (width - help_tex.width) / 2
            y = max(8.0, (height - 2 * line - help_tex.height) / 2)
            self.overlay.rect(x - 12, y - 8, help_tex.width + 24, help_tex.height + 16,
                              (0.0, 0.0, 0.0, 0.8))
            self.overlay.image(help_tex, x, y, help_tex.width, help_tex.height)

    def _draw_bars(self, state: HudState, width: int) -> None:
        y = 8.0
        bar_w = min(360.0, width * 0.4)
        for bar in state.jobs.values():
            _, h = self._label(bar.label, 8, y)
            y += h
            frac = float(np.clip(bar.fraction, 0.0, 1.0))
            self.overlay.rect(8, y, bar_w, 8, (1.0, 1.0, 1.0, 0.25))
            self.overlay.rect(8, y, bar_w * frac, 8, (0.2, 0.8, 1.0, 0.9))
            y += 14
