"""Recording what is shown: the MP4 recorder (R) and screenshots (F12).

Both take the view *without* the HUD unless ``record.keep_hud`` is set: the explorer calls
:meth:`Recording.capture` once with the view and once more after the HUD is drawn, and the
setting picks which one is kept. Recordings run on the app clock, which the window advances
by wall time: each picture is stamped with its time, so a slow renderer makes longer-lasting
pictures, never a shorter video. Stopping hands the recorder to its own thread to finalise;
:meth:`Recording.poll` collects those that are done, so the window never waits for a file.
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

    def __init__(self, settings: RecordSettings, record_path: str | Path | None = None,
                 encode_delay_s: float = 0.0):
        self.settings = settings
        self.encode_delay_s = encode_delay_s
        """Seconds the encoder sleeps per picture (``debug.encode_sleep_s``: tests only)."""
        self.record_path = Path(record_path) if record_path else None
        self.recorder: VideoRecorder | None = None
        self.finalising: list[VideoRecorder] = []
        """Stopped recorders whose files are still being finished on their threads."""
        self.recordings: list[RecordingStats] = []
        self.screenshot_threads: list[threading.Thread] = []
        self._screenshot: Path | None = None

    def start(self, size: tuple[int, int], now: float, path: str | Path | None = None) -> Path:
        if path is None:
            path = self._next_path()
        self.recorder = VideoRecorder(path, *size, self.settings.fps, self.settings.queue_size,
                                      encode_delay_s=self.encode_delay_s)
        self.recorder.start(now)
        return Path(path)

    def _next_path(self) -> Path:
        """``--record``'s path (later ones ``-2``, ``-3``, ...), else a time-stamped one; never
        the file of a recording still being finished."""
        if self.record_path is None:
            first, n = Path(self.settings.folder) / time.strftime("journey-%Y%m%d-%H%M%S.mp4"), 1
        else:
            first, n = self.record_path, len(self.recordings) + len(self.finalising) + 1
        busy = {r.path for r in self.finalising}
        path = first if n == 1 else Path(f"{first.with_suffix('')}-{n}.mp4")
        while path in busy:
            n += 1
            path = Path(f"{first.with_suffix('')}-{n}.mp4")
        return path

    def stop(self, now: float) -> VideoRecorder | None:
        """Stop recording at app-clock ``now``; the file is finished on the recorder's thread
        (see :meth:`poll`). Returns the stopped recorder (None when not recording)."""
        if self.recorder is None:
            return None
        recorder, self.recorder = self.recorder, None
        recorder.stop(now)
        self.finalising.append(recorder)
        return recorder

    def poll(self) -> list[RecordingStats | str]:
        """What became of the recordings finalised since the last call: the statistics of
        each file closed (also kept in ``recordings``), or the sentence of one that failed."""
        done = [r for r in self.finalising if r.done]
        self.finalising = [r for r in self.finalising if not r.done]
        out: list[RecordingStats | str] = []
        for recorder in done:
            try:
                stats = recorder.wait(0)
            except RuntimeError as exc:
                out.append(str(exc))
                continue
            self.recordings.append(stats)
            out.append(stats)
        return out

    def report(self) -> list[str]:
        """One status line per recording finished since the last call (saved, or failed)."""
        return [done if isinstance(done, str) else
                f"saved {done.duration_s:.1f} s ({done.frames_written} pictures) to {done.path}"
                for done in self.poll()]

    def finish(self, now: float) -> list[RecordingStats | str]:
        """Stop any recording and wait until every file is closed (quitting)."""
        self.stop(now)
        for recorder in self.finalising:
            recorder.join()
        return self.poll()

    def screenshot(self, path: str | Path | None = None) -> Path:
        """Save the next rendered view as PNG (on a background thread)."""
        folder = Path(self.settings.screenshot_folder)
        path = Path(path) if path else folder / time.strftime("shot-%Y%m%d-%H%M%S.png")
        self._screenshot = path
        return path

    def wants_pixels(self, now: float) -> bool:
        due = self.recorder is not None and self.recorder.frame_due(now)
        return due or self._screenshot is not None

    def capture(self, read_rgb: Callable[[], np.ndarray], now: float, with_hud: bool) -> Path | None:
        """Feed this frame's pixels if this is the pass (with or without HUD) the settings
        keep; returns the screenshot written, if any."""
        if with_hud != self.settings.keep_hud or not self.wants_pixels(now):
            return None
        rgb = read_rgb()
        if self.recorder is not None and self.recorder.frame_due(now):
            self.recorder.submit(rgb, now)
        if self._screenshot is None:
            return None
        path, self._screenshot = self._screenshot, None
        self.screenshot_threads.append(save_screenshot(rgb.copy(), path))
        return path
