"""The player's credit accounting: every frame received is credited exactly once and every
clip ends, whatever the tick lengths and arrival times (hypothesis)."""

from __future__ import annotations

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from explorer.player import ClipFrame, ClipPlayer, PlayerState
from explorer.settings import PlayerSettings

IMG = np.zeros((2, 2, 3), np.uint8)


def frame(i: int, now: float) -> ClipFrame:
    return ClipFrame(i, np.eye(4), np.eye(3), IMG, arrived_at=now)


clips = st.lists(st.tuples(st.integers(1, 30), st.booleans()), min_size=1, max_size=3)
"""(frames, loop) per clip, sent one after another as a backend does."""


@settings(max_examples=100, deadline=None)
@given(clips=clips,
       ticks=st.lists(st.floats(0.001, 0.5), min_size=1, max_size=40),
       gaps=st.lists(st.floats(0.0, 0.3), min_size=1, max_size=40),
       extra_credits=st.integers(0, 6), prebuffer=st.integers(1, 8),
       stop_loop_after=st.floats(0.0, 3.0))
def test_every_received_frame_is_credited_once_and_every_clip_ends(
        clips, ticks, gaps, extra_credits, prebuffer, stop_loop_after):
    credits = prebuffer + extra_credits  # the explorer keeps max_prebuffer <= credits
    player = ClipPlayer(PlayerSettings(min_prebuffer=min(2, prebuffer), max_prebuffer=prebuffer))
    # The backend: clips in order, one frame per gap, never more than `credits` unacknowledged.
    to_send = [(f"job-{c}", i, n, loop) for c, (n, loop) in enumerate(clips) for i in range(n)]
    in_flight, sent, now, next_send = credits, 0, 0.0, 0.0
    loops_started: dict[str, float] = {}
    for k in range(20000):
        while sent < len(to_send) and in_flight > 0 and now >= next_send:
            job, i, n, loop = to_send[sent]
            player.add(job, frame(i, now), n, 24.0, loop)
            sent, in_flight = sent + 1, in_flight - 1
            next_send = now + gaps[sent % len(gaps)]
            if i == n - 1:
                player.finish(job)
        dt = ticks[k % len(ticks)]
        now += dt
        player.update(dt, now)
        in_flight += player.take_credits()
        clip = player.clip
        if clip is not None and clip.loop:  # a person stops a loop after a while
            started = loops_started.setdefault(clip.job_id, now)
            if now - started >= stop_loop_after and clip.done:
                player.discard(clip.job_id)
                in_flight += player.take_credits()
        if sent == len(to_send) and player.clip is None and not player.queue:
            break
    assert sent == len(to_send), "the backend was left waiting for credit"
    assert player.clip is None and not player.queue, f"a clip never ended ({player.state})"
    assert player.credits_total == player.frames_received == len(to_send)
    assert in_flight == credits
    assert player.clips_ended == len(clips)


def test_skipped_frames_are_credited_at_five_fps():
    """At 5 fps each tick passes ~5 frames of a 24 fps clip: all of them are credited."""
    player = ClipPlayer(PlayerSettings(min_prebuffer=2, max_prebuffer=8))
    for i in range(8):
        player.add("t", frame(i, 0.0), 48, 24.0, False)
    player.update(0.2, 0.2)
    assert player.state == PlayerState.PLAYING
    player.update(0.2, 0.4)  # the playhead is at frame 4: frames 0-4 are done with
    assert player.take_credits() == 5
    player.discard("t")  # dropped with its clip: the other three
    assert player.take_credits() == 3
    player.add("t", frame(8, 0.5), 48, 24.0, False)  # still in flight when it was dropped
    assert player.take_credits() == 1
