"""Recording what the window shows: MP4 (PyAV, H.264, yuv420p) at a constant frame rate.

The render loop calls :meth:`VideoRecorder.frames_due` with the app clock; only when an
output frame is due does it read the pixels back and :meth:`submit` them. Encoding runs on
a background thread behind a bounded queue: when the queue is full the frame is dropped and
counted, and the next accepted frame is repeated in its place, so the file keeps a constant
rate and the right duration while the render loop never waits.
"""

from __future__ import annotations

import logging
import queue
import threading
from dataclasses import dataclass
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)


@dataclass
class RecordingStats:
    path: Path
    frames_written: int
    frames_dropped: int
    fps: float
    width: int
    height: int


class VideoRecorder:
    """One MP4 file; ``start`` opens it, ``stop`` drains the queue and finalises it."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float = 30.0,
                 queue_size: int = 8, crf: int = 20, preset: str = "veryfast"):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        # yuv420p needs even sizes: the odd last row/column is cropped.
        self.width, self.height = int(width) // 2 * 2, int(height) // 2 * 2
        if self.width < 2 or self.height < 2:
            raise ValueError(f"frame too small to encode: {width}x{height}")
        self.fps = float(fps)
        self.crf, self.preset = crf, preset
        self._queue: queue.Queue = queue.Queue(maxsize=queue_size)
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._start_time: float | None = None
        self._frames_due = 0
        self._owed = 0
        self.frames_written = 0
        self.frames_dropped = 0

    # --- render-thread side -------------------------------------------------------------

    def start(self, now: float) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._start_time = now
        self._thread = threading.Thread(target=self._encode_loop, name="dj-recorder", daemon=True)
        self._thread.start()
        logger.info("recording to %s at %.0f fps", self.path, self.fps)

    @property
    def recording(self) -> bool:
        return self._thread is not None

    def frames_due(self, now: float) -> int:
        """Output frames that the picture shown at ``now`` stands for (0: skip the readback)."""
        if self._start_time is None:
            return 0
        total = int(np.floor((now - self._start_time) * self.fps + 1e-9)) + 1
        return max(0, total - self._frames_due)

    def submit(self, rgb: np.ndarray, now: float) -> bool:
        """Queue the picture (H x W x 3 uint8, top row first) for the frames due at ``now``.

        Never blocks; returns False if the queue was full and the frame was dropped.
        """
        count = self.frames_due(now)
        if count <= 0:
            return True
        self._frames_due += count
        if self._error is not None:
            raise RuntimeError(f"recording to {self.path} failed: {self._error}")
        try:
            self._queue.put_nowait((rgb, count + self._owed))
            self._owed = 0
            return True
        except queue.Full:
            self.frames_dropped += count
            self._owed += count
            return False

    def stop(self) -> RecordingStats:
        """Finish: encode what is queued, flush the encoder, close the file."""
        if self._thread is None:
            raise RuntimeError("the recorder is not running")
        self._queue.put((None, self._owed))  # dropped frames still owed: repeat the last one
        self._owed = 0
        self._thread.join()
        self._thread = None
        if self._error is not None:
            raise RuntimeError(f"recording to {self.path} failed: {self._error}")
        stats = RecordingStats(self.path, self.frames_written, self.frames_dropped, self.fps,
                               self.width, self.height)
        logger.info("recorded %d frames (%d dropped) to %s", stats.frames_written,
                    stats.frames_dropped, self.path)
        return stats

    # --- encoder thread ------------------------------------------------------------------

    def _encode_loop(self) -> None:
        from fractions import Fraction

        import av

        try:
            # Fragmented MP4: every keyframe closes a fragment, so a file cut off by a crash
            # or a lost display still plays up to its last fragment.
            container = av.open(str(self.path), mode="w", format="mp4",
                                options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
        except Exception as exc:  # noqa: BLE001 - reported on the render thread
            self._error = exc
            self._drain()
            return
        try:
            stream = container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height = self.width, self.height
            stream.pix_fmt = "yuv420p"
            stream.options = {"crf": str(self.crf), "preset": self.preset,
                              "g": str(max(1, round(self.fps)))}  # a fragment a second
            stream.thread_count = 1
            frame = None
            stopping = False
            while not stopping:
                rgb, count = self._queue.get()
                stopping = rgb is None
                if rgb is not None:
                    image = np.ascontiguousarray(rgb[: self.height, : self.width])
                    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                    frame = frame.reformat(format="yuv420p")
                for _ in range(count if frame is not None else 0):
                    frame.pts = self.frames_written
                    container.mux(stream.encode(frame))
                    self.frames_written += 1
            container.mux(stream.encode(None))
        except Exception as exc:  # noqa: BLE001 - reported on the render thread
            logger.exception("recording failed")
            self._error = exc
            if not stopping:
                self._drain()
        finally:
            container.close()

    def _drain(self) -> None:
        while True:
            rgb, _ = self._queue.get()
            if rgb is None:
                return


def save_screenshot(rgb: np.ndarray, path: str | Path) -> threading.Thread:
    """Write a PNG on a background thread (returned, already started)."""
    from PIL import Image

    path = Path(path)

    def _write() -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.ascontiguousarray(rgb)).save(path, format="PNG", compress_level=1)
        logger.info("screenshot saved to %s", path)

    thread = threading.Thread(target=_write, name="dj-screenshot", daemon=True)
    thread.start()
    return thread
