"""Recording what the window shows: MP4 (PyAV, H.264, yuv420p) with each picture's own time.

The render loop asks :meth:`VideoRecorder.frame_due` with the app clock; only when a picture
is due (at most ``fps`` a second) does it read the pixels back and :meth:`submit` them. Each
picture is encoded once, stamped with the app-clock time it was shown (milliseconds), so a
slow renderer makes a variable-rate file of the right duration instead of repeating
pictures: a 7-minute recording at 2 fps is 840 pictures, not 12,600. Encoding runs on a
background thread behind a bounded queue; when the queue is full the picture is dropped and
counted, and the one before it simply lasts longer.

:meth:`stop` never waits: it queues the end time and returns; the encoder thread finishes
what is queued, flushes and closes the file. :attr:`done` and :meth:`wait` tell when.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import numpy as np

logger = logging.getLogger(__name__)

TIME_BASE = Fraction(1, 1000)
"""Timestamps in milliseconds of the app clock."""
KEYFRAME_S = 1.0
"""A keyframe (and so a closed MP4 fragment) at least this often, in recording seconds."""


@dataclass
class RecordingStats:
    path: Path
    frames_written: int
    """Pictures encoded (each once; the last one again at the end if it was shown longer)."""
    frames_dropped: int
    """Pictures not encoded because the encoder was behind (the previous one lasts longer)."""
    fps: float
    """The most pictures a second the recording takes."""
    width: int
    height: int
    duration_s: float = 0.0
    """From start to stop on the app clock: the file's duration."""
    finalise_s: float = 0.0
    """Wall seconds between ``stop`` and the closed file (what a blocking stop would have cost)."""


class VideoRecorder:
    """One MP4 file; ``start`` opens it, ``stop`` asks the encoder thread to finalise it."""

    def __init__(self, path: str | Path, width: int, height: int, fps: float = 30.0,
                 queue_size: int = 8, crf: int = 20, preset: str = "veryfast",
                 encode_delay_s: float = 0.0):
        if fps <= 0:
            raise ValueError(f"fps must be positive, got {fps}")
        self.path = Path(path)
        # yuv420p needs even sizes: the odd last row/column is cropped.
        self.width, self.height = int(width) // 2 * 2, int(height) // 2 * 2
        if self.width < 2 or self.height < 2:
            raise ValueError(f"frame too small to encode: {width}x{height}")
        self.fps = float(fps)
        self.crf, self.preset = crf, preset
        self.queue_size = max(1, int(queue_size))
        self.encode_delay_s = encode_delay_s
        """Extra seconds per picture on the encoder thread: a deliberately slow encoder (tests)."""
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._error: BaseException | None = None
        self._start_time: float | None = None
        self._last_due: float | None = None
        self._stopped_at: float | None = None
        self._stop_wall = 0.0
        self._finished = threading.Event()
        self._key_ms: int | None = None
        self.stats: RecordingStats | None = None
        """Set once the file is closed."""
        self.frames_written = 0
        self.frames_dropped = 0

    # --- render-thread side -------------------------------------------------------------

    def start(self, now: float) -> None:
        """Open the file; the recording's time 0 is the first picture submitted."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread = threading.Thread(target=self._encode_loop, name="dj-recorder", daemon=True)
        self._thread.start()
        logger.info("recording to %s (at most %.0f fps)", self.path, self.fps)

    @property
    def recording(self) -> bool:
        """Started and not yet stopped."""
        return self._thread is not None and self._stopped_at is None

    def frame_due(self, now: float) -> bool:
        """Whether the picture shown at ``now`` should be recorded (False: skip the readback)."""
        if not self.recording:
            return False
        return self._last_due is None or now - self._last_due >= 1.0 / self.fps - 1e-6

    def submit(self, rgb: np.ndarray, now: float) -> bool:
        """Queue the picture (H x W x 3 uint8, top row first) shown from ``now`` on.

        Never blocks; returns False if the encoder was behind and the picture was dropped.
        """
        if not self.frame_due(now):
            return True
        if self._start_time is None:
            self._start_time = now
        self._last_due = now
        if self._error is not None:
            raise RuntimeError(f"recording to {self.path} failed: {self._error}")
        if self._queue.qsize() >= self.queue_size:
            self.frames_dropped += 1
            if self.frames_dropped == 1:
                logger.warning("recording: the encoder is %d pictures behind; pictures are "
                               "dropped (the others keep their times)", self.queue_size)
            return False
        self._queue.put((rgb, now - self._start_time))
        return True

    def stop(self, now: float) -> None:
        """Finish at app-clock ``now``: returns at once; the encoder thread closes the file."""
        if self._thread is None:
            raise RuntimeError("the recorder is not running")
        if self._stopped_at is not None:
            return
        self._stopped_at = now
        self._stop_wall = time.perf_counter()
        start = now if self._start_time is None else self._start_time
        self._queue.put((None, max(0.0, now - start)))

    @property
    def done(self) -> bool:
        """The file is closed (or failed)."""
        return self._finished.is_set()

    def join(self, timeout: float | None = None) -> bool:
        """Wait up to ``timeout`` s for the file to be closed; whether it is."""
        return self._finished.wait(timeout)

    def wait(self, timeout: float | None = None) -> RecordingStats:
        """Block until the file is closed (call :meth:`stop` first); its statistics."""
        if self._stopped_at is None:
            raise RuntimeError("stop the recorder before waiting for it")
        if not self.join(timeout):
            raise TimeoutError(f"recording to {self.path} still finalising after {timeout} s")
        if self._error is not None:
            raise RuntimeError(f"recording to {self.path} failed: {self._error}")
        if self.stats is None:
            raise RuntimeError(f"recording to {self.path} ended without its statistics")
        return self.stats

    # --- encoder thread ------------------------------------------------------------------

    def _encode_loop(self) -> None:
        try:
            self._encode()
        except Exception as exc:  # noqa: BLE001 - reported on the render thread
            logger.exception("recording to %s failed", self.path)
            self._error = exc
            self._drain()
        finally:
            self._finished.set()

    def _encode(self) -> None:
        import av

        # Fragmented MP4: every keyframe closes a fragment, so a file cut off by a crash or a
        # lost display still plays up to its last fragment.
        container = av.open(str(self.path), mode="w", format="mp4",
                            options={"movflags": "frag_keyframe+empty_moov+default_base_moof"})
        try:
            stream = container.add_stream("libx264", rate=Fraction(self.fps).limit_denominator(1001))
            stream.width, stream.height = self.width, self.height
            stream.pix_fmt = "yuv420p"
            stream.codec_context.time_base = TIME_BASE
            stream.time_base = TIME_BASE
            # zerolatency: no B-frames (timestamps go in as they are, no reordering shifts
            # them) and no look-ahead (each picture is in the file at once); a keyframe, so a
            # fragment, every KEYFRAME_S of recording however slowly pictures come.
            stream.options = {"crf": str(self.crf), "preset": self.preset, "tune": "zerolatency",
                              "forced-idr": "1", "g": str(max(1, round(10 * self.fps)))}
            stream.thread_count = 1
            end_s = self._encode_queued(container, stream)
            container.mux(stream.encode(None))
        finally:
            container.close()
        self.stats = RecordingStats(self.path, self.frames_written, self.frames_dropped, self.fps,
                                    self.width, self.height, end_s,
                                    time.perf_counter() - self._stop_wall)
        logger.info("recorded %d frames (%d dropped, %.1f s) to %s, finalised in %.2f s",
                    self.frames_written, self.frames_dropped, end_s, self.path,
                    self.stats.finalise_s)

    def _encode_queued(self, container, stream) -> float:
        """Encode pictures until the stop marker; the recording's end in seconds."""
        import av

        frame, last_ms, self._key_ms = None, -1, None
        while True:
            rgb, t = self._queue.get()
            if rgb is None:
                break
            image = np.ascontiguousarray(rgb[: self.height, : self.width])
            frame = av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="yuv420p")
            last_ms = self._put(container, stream, frame, max(round(t * 1000), last_ms + 1))
            if self.encode_delay_s > 0:
                time.sleep(self.encode_delay_s)
        # The last picture lasts until the stop: shown once more, a frame before the end (the
        # muxer gives a file's last frame one frame interval).
        end_ms = round(t * 1000)
        tail_ms = end_ms - round(1000 / self.fps)
        if frame is not None and tail_ms > last_ms:
            self._put(container, stream, frame, tail_ms)
        return max(end_ms, last_ms) / 1000

    def _put(self, container, stream, frame, pts_ms: int) -> int:
        import av

        frame.pts = pts_ms
        frame.time_base = TIME_BASE
        if self._key_ms is None or pts_ms - self._key_ms >= KEYFRAME_S * 1000:
            frame.pict_type = av.video.frame.PictureType.I
            self._key_ms = pts_ms
        else:
            frame.pict_type = av.video.frame.PictureType.NONE
        container.mux(stream.encode(frame))
        self.frames_written += 1
        return pts_ms

    def _drain(self) -> None:
        while self._queue.get()[0] is not None:
            pass


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
