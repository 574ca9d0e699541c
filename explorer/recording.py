"""Recording what is shown: the MP4 recorder (R) and screenshots (F12).

Both take the view *without* the HUD unless ``record.keep_hud`` is set: the explorer calls
:meth:`Recording.capture` once with the view and once more after the HUD is drawn, and the
setting picks which one is kept. Recordings run on the app clock, which the window advances
by wall time, so a slow renderer repeats frames rather than shortening the video.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from pathlib import Path

import numpy as np

from explorer.recorder import RecordingStats, VideoRecorder, save_screenshot
from explorer.settings import RecordSettings


class Recording:
    """The recorder of the session, the recordings made, and pending screenshots."""

    def __init__(self, settings: RecordSettings, record_path: str | Path | None = None):
        self.settings = settings
        self.record_path = Path(record_path) if record_path else None
        self.recorder: VideoRecorder | None = None
        self.recordings: list[RecordingStats] = []
        self.screenshot_threads: list[threading.Thread] = []
        self._screenshot: Path | None = None

    def start(self, size: tuple[int, int], now: float, path: str | Path | None = None) -> Path:
        if path is None:
            path = self._next_path()
        self.recorder = VideoRecorder(path, *size, self.settings.fps, self.settings.queue_size)
        self.recorder.start(now)
        return Path(path)

    def _next_path(self) -> Path:
        if self.record_path is None:
            return Path(self.settings.folder) / time.strftime("journey-%Y%m%d-%H%M%S.mp4")
        if not self.recordings:
            return self.record_path
        return Path(f"{self.record_path.with_suffix('')}-{len(self.recordings) + 1}.mp4")

    def stop(self) -> RecordingStats | None:
        """Finalise the MP4 (safe to call when not recording)."""
        if self.recorder is None:
            return None
        recorder, self.recorder = self.recorder, None
        stats = recorder.stop()
        self.recordings.append(stats)
        return stats

    def screenshot(self, path: str | Path | None = None) -> Path:
        """Save the next rendered view as PNG (on a background thread)."""
        folder = Path(self.settings.screenshot_folder)
        path = Path(path) if path else folder / time.strftime("shot-%Y%m%d-%H%M%S.png")
        self._screenshot = path
        return path

    def wants_pixels(self, now: float) -> bool:
        due = self.recorder is not None and self.recorder.frames_due(now) > 0
        return due or self._screenshot is not None

    def capture(self, read_rgb: Callable[[], np.ndarray], now: float, with_hud: bool) -> Path | None:
        """Feed this frame's pixels if this is the pass (with or without HUD) the settings
        keep; returns the screenshot written, if any."""
        if with_hud != self.settings.keep_hud or not self.wants_pixels(now):
            return None
        rgb = read_rgb()
        if self.recorder is not None and self.recorder.frames_due(now):
            self.recorder.submit(rgb, now)
        if self._screenshot is None:
            return None
        path, self._screenshot = self._screenshot, None
        self.screenshot_threads.append(save_screenshot(rgb.copy(), path))
        return path
