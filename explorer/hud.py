"""The heads-up display: status lines, one progress bar per running job, fps, key help (F1).

Text is rendered with Pillow into small RGBA textures (cached by content), which is robust on
every GL driver, llvmpipe included; bars are flat quads. Layout is in window pixels. Every
line is wrapped to the window's width (:func:`wrap_text`), so nothing runs off the edge: the
panel at the bottom grows by the lines it needs.
"""

from __future__ import annotations

from collections import OrderedDict
from dataclasses import dataclass, field

import moderngl
import numpy as np
from PIL import Image, ImageDraw, ImageFont

from explorer.renderer import OverlayRenderer

Font = ImageFont.ImageFont | ImageFont.FreeTypeFont
"""A FreeType font, or Pillow's bitmap font where FreeType is missing."""


class TextCache:
    """RGBA textures of text blocks, keyed by (text, size); least recently used are freed."""

    def __init__(self, ctx: moderngl.Context, capacity: int = 64):
        self.ctx = ctx
        self.capacity = capacity
        self._items: OrderedDict[tuple[str, int], moderngl.Texture] = OrderedDict()
        self._fonts: dict[int, Font] = {}

    def font(self, size: int) -> Font:
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


def render_text(text: str, font: Font, pad: int = 4) -> tuple:
    """(size, components, bytes) of white text with a dark outline on transparent pixels."""
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))
    left, top, right, bottom = probe.multiline_textbbox((0, 0), text, font=font, stroke_width=1)
    w, h = max(1, int(right - left) + 2 * pad), max(1, int(bottom - top) + 2 * pad)
    img = Image.new("RGBA", (w, h), (0, 0, 0, 0))
    ImageDraw.Draw(img).multiline_text(
        (pad - left, pad - top), text, font=font, fill=(255, 255, 255, 255),
        stroke_width=1, stroke_fill=(0, 0, 0, 255),
    )
    return (w, h), 4, np.asarray(img).tobytes()


def render_table(rows: tuple[tuple[str, str], ...], font: Font, pad: int = 6,
                 gap: int = 24) -> tuple:
    """(size, components, bytes) of a two-column table: keys bold-ish yellow, text white."""
    probe = ImageDraw.Draw(Image.new("RGBA", (1, 1)))

    def box(text: str) -> tuple[int, int]:
        left, top, right, bottom = probe.textbbox((0, 0), text, font=font, stroke_width=1)
        return int(right - left), int(bottom - top)

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


def wrap_text(text: str, font: Font, width: float) -> list[str]:
    """``text`` broken at spaces (or inside a word longer than a line) into lines no wider
    than ``width`` pixels in ``font`` (outline included)."""
    def fits(line: str) -> bool:
        return font.getlength(line) + 2 <= width

    lines: list[str] = []
    line = ""
    for word in text.split(" "):
        candidate = f"{line} {word}" if line else word
        if fits(candidate):
            line = candidate
            continue
        if line:
            lines.append(line)
        while word and not fits(word):  # a word wider than a line: cut it
            cut = max(1, max((n for n in range(1, len(word) + 1) if fits(word[:n])), default=1))
            lines.append(word[:cut])
            word = word[cut:]
        line = word
    if line or not lines:
        lines.append(line)
    return lines


@dataclass
class JobBar:
    label: str
    fraction: float = 0.0


@dataclass
class HudState:
    lines: list[str] = field(default_factory=list)
    """The panel at the bottom, top line first (status, scene, depth, playback): each is
    wrapped to the window's width."""
    fps: float = 0.0
    jobs: dict[str, JobBar] = field(default_factory=dict)
    show_help: bool = False
    help_rows: tuple[tuple[str, str], ...] = ()
    """The F1 table: (keys, what they do) per row."""
    recording: bool = False


class Hud:
    """Draws a :class:`HudState` with an :class:`OverlayRenderer`."""

    def __init__(self, ctx: moderngl.Context, overlay: OverlayRenderer, font_size: int = 16):
        self.overlay = overlay
        self.text = TextCache(ctx)
        self.base_size = font_size
        """Text size in windows 720 px wide or more."""
        self.font_size = font_size
        self._wrapped: dict[tuple[str, int, int], list[str]] = {}

    def _label(self, text: str, x: float, y: float, size: int | None = None) -> tuple[int, int]:
        tex = self.text.get(text, size or self.font_size)
        self.overlay.image(tex, x, y, tex.width, tex.height)
        return tex.width, tex.height

    def wrap(self, text: str, width: float) -> list[str]:
        """:func:`wrap_text` in the HUD's font, remembered (the same lines come every frame)."""
        key = (text, int(width), self.font_size)
        rows = self._wrapped.get(key)
        if rows is None:
            rows = wrap_text(text, self.text.font(self.font_size), max(1.0, width))
            if len(self._wrapped) > 256:
                self._wrapped.clear()
            self._wrapped[key] = rows
        return rows

    def size_for(self, width: int) -> int:
        """The text size for a window ``width`` pixels wide (smaller in small windows)."""
        return self.base_size if width >= 720 else max(10, self.base_size - (2 if width >= 480 else 5))

    def draw(self, state: HudState, width: int, height: int) -> None:
        self.font_size = self.size_for(width)
        line = self.font_size + 6
        rows = [r for text in state.lines if text for r in self.wrap(text, width - 24)]
        panel = len(rows) * line + 8
        self.overlay.rect(0, height - panel, width, panel, (0.0, 0.0, 0.0, 0.45))
        for i, row in enumerate(rows):
            self._label(row, 8, height - panel + 2 + i * line)
        fps_text = f"{state.fps:5.1f} fps"
        tex = self.text.get(fps_text, self.font_size)
        self.overlay.image(tex, width - tex.width - 8, 6, tex.width, tex.height)
        if state.recording:
            self.overlay.rect(width - tex.width - 30, 12, 14, 14, (0.9, 0.1, 0.1, 1.0))
        self._draw_bars(state, width - tex.width - 48)
        if state.show_help and state.help_rows:
            room = height - panel - 24  # above the status lines
            for size in (self.base_size, 14, 12, 10):
                help_tex = self.text.table(state.help_rows, size)
                if help_tex.height <= room:
                    break
            x = (width - help_tex.width) / 2
            y = max(8.0, (height - panel - help_tex.height) / 2)
            self.overlay.rect(x - 12, y - 8, help_tex.width + 24, help_tex.height + 16,
                              (0.0, 0.0, 0.0, 0.8))
            self.overlay.image(help_tex, x, y, help_tex.width, help_tex.height)

    def _draw_bars(self, state: HudState, room: float) -> None:
        """Each job's label (wrapped to ``room`` pixels, left of the fps) and its bar."""
        y = 8.0
        bar_w = min(360.0, room - 16)
        for bar in state.jobs.values():
            for row in self.wrap(bar.label, room - 16):
                _, h = self._label(row, 8, y)
                y += h
            frac = float(np.clip(bar.fraction, 0.0, 1.0))
            self.overlay.rect(8, y, bar_w, 8, (1.0, 1.0, 1.0, 0.25))
            self.overlay.rect(8, y, bar_w * frac, 8, (0.2, 0.8, 1.0, 0.9))
            y += 14
