"""Clip playback: frames queue as they stream in and play at the clip's fps.

The player is pure logic on the app clock (no GL, no sockets): ``add`` takes decoded frames,
``update(dt)`` advances playback and reports which frame to show. A transition clip starts
once enough frames are buffered to play through at the measured arrival rate, and ends on its
last pose; a dynamics clip (``loop``) repeats until stopped.

A slow renderer (a tick longer than a frame) skips frames: the playhead keeps the wall clock
and each tick shows the newest frame it has reached. The end waits for the last frame: a
clip whose playhead is past its end while its last frames are still on their way holds on
the newest one it has, so it always ends on its last pose (once the backend has sent it),
never where the tick happened to land. ``show_every_frame`` advances at most one frame a tick.

Credits are accounted per frame *received*: every frame that arrives is credited exactly
once, when the playhead reaches or passes it (shown or skipped), when its clip ends or is
dropped, or at once if its clip is already over. :meth:`ClipPlayer.take_credits` hands the
count to the caller, who grants it on the wire, so no pacing of ticks can leave the backend
waiting for credit that never comes.
"""

from __future__ import annotations

import logging
import math
from dataclasses import dataclass, field
from enum import Enum

import numpy as np

from explorer.settings import PlayerSettings

logger = logging.getLogger(__name__)


@dataclass
class ClipFrame:
    index: int
    pose: np.ndarray
    """OpenCV camera-to-world 4x4."""
    K: np.ndarray
    image: np.ndarray
    """H x W x 3 uint8 RGB."""
    arrived_at: float
    """App-clock seconds when the frame was taken off the socket."""
    received_ns: int = 0
    """``time.perf_counter_ns`` at arrival, for latency measurements."""


class PlayerState(Enum):
    IDLE = "idle"
    BUFFERING = "buffering"
    PLAYING = "playing"
    STALLED = "stalled"
    """Playing, but the next frame has not arrived yet: the clock holds."""
    FINISHED = "finished"


@dataclass
class Clip:
    job_id: str
    num_frames: int
    fps: float
    loop: bool
    frames: dict[int, ClipFrame] = field(default_factory=dict)
    done: bool = False
    """The backend finished (JobDone or JobFailed); no more frames will come."""
    credited: set[int] = field(default_factory=set)
    """Indices of frames whose credit has been handed out."""

    def contiguous(self) -> int:
        """How many frames from index 0 are present without a gap."""
        n = 0
        while n in self.frames:
            n += 1
        return n

    def expected(self) -> int:
        """Frames the clip will have: all announced, or once done, up to the last received."""
        if self.done:
            return max(self.frames) + 1 if self.frames else 0
        return self.num_frames


@dataclass
class ShowFrame:
    """What the app should display this tick."""

    frame: ClipFrame
    new: bool
    """First time this frame is shown (upload it)."""
    alpha: float
    ended: bool = False
    """The clip just ended on this frame: hand the camera back at its pose."""


class ClipPlayer:
    """Plays one clip at a time on the app clock; later clips wait their turn."""

    def __init__(self, settings: PlayerSettings | None = None):
        self.settings = settings or PlayerSettings()
        self.credits_due = 0
        """Frames finished with but not yet handed to :meth:`take_credits`."""
        self.credits_total = 0
        """Every credit ever handed out (tests compare it with frames received)."""
        self.frames_received = 0
        self.clips_ended = 0
        self._over: set[str] = set()
        self.queue: list[Clip] = []
        self.clip: Clip | None = None
        self.state = PlayerState.IDLE
        self.position = 0.0
        """Seconds into the current clip."""
        self.shown_index = -1
        self.stalls = 0
        self._consumed: set[int] = set()
        self.started_at = 0.0
        self.ticks = 0
        """Updates since the current clip started."""
        self.longest_tick = 0.0
        """The longest of those updates' ``dt``."""
        self.waited = 0.0
        """Seconds of the current clip's playing time its clock held for a frame not yet here."""
        self._passed = -1.0
        """Furthest point of the clip's timeline (frame index, unwrapped) the playhead reached."""
        self._looped = False
        self._clock = 0.0

    # --- feeding -------------------------------------------------------------------------

    def begin(self, job_id: str, num_frames: int, fps: float, loop: bool) -> None:
        """Announce a clip (on JobAccepted, or on its first frame)."""
        if self._find(job_id) is None:
            self.queue.append(Clip(job_id, num_frames, fps, loop))

    def add(self, job_id: str, frame: ClipFrame, num_frames: int, fps: float, loop: bool) -> None:
        self.frames_received += 1
        clip = self._find(job_id)
        if job_id in self._over or (clip is not None and frame.index in clip.frames):
            self._credit(1)  # its clip is over, or a repeat: nobody will show it
            return
        if clip is None:
            clip = Clip(job_id, num_frames, fps, loop)
            self.queue.append(clip)
        clip.num_frames, clip.fps, clip.loop = num_frames, fps, loop
        clip.frames[frame.index] = frame
        if clip is self.clip and frame.index <= self._passed:
            self._credit_frames(clip, frame.index)

    def take_credits(self) -> int:
        """Credits to grant now (frames received and finished with); resets the count."""
        due, self.credits_due = self.credits_due, 0
        return due

    def _credit(self, n: int) -> None:
        self.credits_due += n
        self.credits_total += n

    def _credit_frames(self, clip: Clip, upto: float) -> None:
        """Credit every received frame of ``clip`` with index <= ``upto`` not yet credited."""
        new = [i for i in clip.frames if i <= upto and i not in clip.credited]
        clip.credited.update(new)
        self._credit(len(new))

    def finish(self, job_id: str) -> None:
        """The backend will send no more frames for ``job_id``."""
        clip = self._find(job_id)
        if clip is not None:
            clip.done = True

    def discard(self, job_id: str) -> None:
        """Drop clip ``job_id`` now (playing or queued); its frames, received or still to
        come, are credited."""
        if self.clip is not None and self.clip.job_id == job_id:
            self._end_clip()
        for clip in [c for c in self.queue if c.job_id == job_id]:
            self._retire(clip)
            self.queue.remove(clip)
        self._over.add(job_id)

    def discard_all(self) -> list[str]:
        """Drop the playing clip and every queued one; their job ids."""
        ids = ([self.clip.job_id] if self.clip is not None else []) + [c.job_id for c in self.queue]
        for job_id in ids:
            self.discard(job_id)
        return ids

    def _retire(self, clip: Clip) -> None:
        """The clip is over: credit its frames that never were, and any still to come."""
        self._credit_frames(clip, math.inf)
        self._over.add(clip.job_id)

    def find(self, job_id: str) -> Clip | None:
        """The clip of ``job_id``, playing or queued."""
        return self._find(job_id)

    def _find(self, job_id: str) -> Clip | None:
        if self.clip is not None and self.clip.job_id == job_id:
            return self.clip
        return next((c for c in self.queue if c.job_id == job_id), None)

    # --- policy --------------------------------------------------------------------------

    def ready_to_start(self, clip: Clip) -> bool:
        """Enough frames buffered to play the clip through without stalling.

        With ``b`` frames buffered of ``n``, arriving at ``r`` frames/s and played at ``f``,
        the remaining ``n - b`` arrive in ``(n - b) / r`` seconds while playing takes
        ``(n - 1) / f``; start when the first fits inside the second.
        """
        have = clip.contiguous()
        total = clip.expected()
        if have == 0:
            return clip.done and bool(clip.frames)  # a gap nothing will fill: play what came
        if have >= total or have >= self.settings.max_prebuffer:
            return True
        if have < self.settings.min_prebuffer:
            return False
        times = sorted(clip.frames[i].arrived_at for i in range(have))
        span = times[-1] - times[0]
        if span <= 0:
            return False
        rate = (have - 1) / span
        return (total - have) / rate <= (total - 1) / clip.fps

    # --- time ----------------------------------------------------------------------------

    @property
    def active(self) -> bool:
        return self.state in (PlayerState.PLAYING, PlayerState.STALLED)

    def update(self, dt: float, now: float) -> ShowFrame | None:
        """Advance ``dt`` seconds; ``now`` is the app clock. Returns the frame to show."""
        self._clock = now
        if self.clip is None:
            self._drop_empty_done()
            if not self.queue or not self.ready_to_start(self.queue[0]):
                self.state = PlayerState.BUFFERING if self.queue else PlayerState.IDLE
                return None
            self.clip = self.queue.pop(0)
            self.started_at = now
            self.ticks = 0
            self.longest_tick = 0.0
            self.waited = 0.0
            self.position = 0.0
            self.shown_index = -1
            self._passed = -1.0
            self._consumed = set()
            self._looped = False
            self.state = PlayerState.PLAYING
        else:
            self.ticks += 1
            self.longest_tick = max(self.longest_tick, dt)
            if self.state == PlayerState.STALLED:  # a stalled clip resumes at the frame's start
                self.waited += dt
            else:
                self.position += dt
                if self.settings.show_every_frame and self._passed >= 0:
                    self.position = min(self.position, (self._passed + 1) / self.clip.fps)
        return self._frame_at_position()

    def _frame_at_position(self) -> ShowFrame | None:
        clip = self.clip
        assert clip is not None
        total = clip.expected()
        linear = int(math.floor(self.position * clip.fps + 1e-6))
        index = linear
        if clip.loop and clip.done and total > 0:
            if index >= total and not self._looped:
                self._looped = True
                logger.info("clip %s looping: %d frames", clip.job_id, total)
            index %= total
        elif clip.loop and index >= clip.num_frames:
            index %= clip.num_frames
        if not clip.loop and index >= total and (clip.done or total - 1 in clip.frames):
            # The end, on the last frame's pose (or, for a job that ended early, its last one).
            last = clip.frames.get(max(clip.frames)) if clip.frames else None
            self._end_clip(natural=True)
            return ShowFrame(last, new=False, alpha=0.0, ended=True) if last is not None else None
        if not clip.loop:
            index = linear = min(index, total - 1)  # past the end: wait for the last frame
        if index not in clip.frames and clip.done:  # a gap nothing will fill: skip it
            gap = min(i for i in clip.frames if i > index) - index
            self.position += gap / clip.fps
            index, linear = index + gap, linear + gap
        if index not in clip.frames:
            # Not here yet: hold the clock there, on the newest frame reached so far.
            self.state = PlayerState.STALLED
            if self.shown_index >= 0:
                self.stalls += 1
            self.waited += max(0.0, self.position - linear / clip.fps)
            self.position = linear / clip.fps
            self._pass(clip, linear - 1)
            index = self._newest_reached(clip, index)
            if index < 0:
                return None
        else:
            self.state = PlayerState.PLAYING
            self._pass(clip, linear)
        new = index not in self._consumed
        self._consumed.add(index)
        self.shown_index = index
        return ShowFrame(clip.frames[index], new=new, alpha=self._alpha(clip))

    def _newest_reached(self, clip: Clip, index: int) -> int:
        """The newest received frame after the one shown and before ``index`` (frames the
        playhead skipped over), else the one shown (-1: none yet)."""
        if clip.loop:
            return self.shown_index
        reached = [i for i in clip.frames if self.shown_index < i < index]
        return max(reached) if reached else self.shown_index

    def _pass(self, clip: Clip, linear: float) -> None:
        """The playhead reached ``linear``: credit what it reached or skipped."""
        if linear <= self._passed:
            return
        self._passed = linear
        self._credit_frames(clip, math.inf if linear >= clip.num_frames else linear)

    def _alpha(self, clip: Clip) -> float:
        fade = self.settings.fade_s
        if fade <= 0 or clip.loop:
            return 1.0
        length = clip.expected() / clip.fps
        return float(np.clip(min(self.position, length - self.position) / fade, 0.0, 1.0)) ** 0.5

    def _end_clip(self, natural: bool = False) -> None:
        if self.clip is not None:
            self._retire(self.clip)
            self.clips_ended += 1
            clip = self.clip
            end = "to its end" if natural else "until stopped"
            logger.info("clip %s played %s: %d/%d frames received in %.2f s (%d ticks, longest "
                        "%.2f s; %.2f s waiting for frames)", clip.job_id, end, len(clip.frames),
                        clip.num_frames, self._clock - self.started_at, self.ticks,
                        self.longest_tick, self.waited)
        self.clip = None
        self.state = PlayerState.FINISHED
        self.shown_index = -1

    def _drop_empty_done(self) -> None:
        for clip in [c for c in self.queue if c.done and not c.frames]:
            self._over.add(clip.job_id)
            self.queue.remove(clip)
