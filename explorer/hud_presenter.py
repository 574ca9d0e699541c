"""The HUD presenter: turns the explorer's state into the HUD's lines and bars, keeps the fps
estimate, and draws it unless hidden (F2)."""

from __future__ import annotations

import math
import time

import moderngl

from explorer.hud import Hud, HudState, JobBar
from explorer.player import ClipPlayer, PlayerState
from explorer.renderer import OverlayRenderer
from explorer.session import ExplorerSession

DEPTH_SOURCES = {"model": "depth model", "given": "your depth map", "prior": "pop-up guess"}
"""What a depth source is called when the backend sent no note of its own."""
DEPTH_NOTE_S = 8.0
"""How long the backend's whole depth note (which depth, why, how to get better) stays on
the HUD after a scene opens; then one short line (the note is in the log as well)."""


class HudPresenter:
    """Status, job bars, fps and the help table; ``visible`` toggled by a key."""

    def __init__(self, ctx: moderngl.Context, overlay: OverlayRenderer,
                 help_rows: list[tuple[str, str]] | None = None):
        self.hud = Hud(ctx, overlay)
        self.state = HudState(help_rows=tuple((key, text) for key, text in help_rows or ()))
        self.visible = True
        self.fps = 0.0
        self.frame_ms = 0.0
        self._last = time.perf_counter()
        self._ticks = 0
        self._depth = DepthLine()

    def toggle(self) -> None:
        self.visible = not self.visible

    def toggle_help(self) -> None:
        self.state.show_help = not self.state.show_help

    def tick(self) -> None:
        """Once per frame: the fps estimate from wall time (averaged over about 0.5 s)."""
        now = time.perf_counter()
        dt, self._last = now - self._last, now
        self._ticks += 1
        if self._ticks < 2 or dt <= 0:  # the first interval is not a frame's
            return
        self.frame_ms = dt * 1000
        a = 1.0 if not self.fps else 1.0 - math.exp(-dt / 0.5)
        self.fps = (1 - a) * self.fps + a / dt

    def draw(self, session: ExplorerSession, player: ClipPlayer, points: int, extra: list[str],
             recording: bool, size: tuple[int, int]) -> None:
        if not self.visible:
            return
        st = self.state
        scene, depth = self._scene_lines(session, points)
        if session.scene is not None:
            depth = self._depth.line(session.scene.depth_source, depth, time.perf_counter())
        st.lines = [session.status, "  |  ".join([scene, *self._player_lines(player), *extra]),
                    depth]
        st.recording = recording
        st.fps = self.fps
        st.jobs = self._bars(session)
        self.hud.draw(st, *size)

    @staticmethod
    def _scene_lines(session: ExplorerSession, points: int) -> tuple[str, str]:
        """The cloud's size and the depth in use (its own line: the longest)."""
        scene = session.scene
        if scene is None:
            return "no scene yet", ""
        budget = f" of {scene.points_budget:,} max" if scene.points_budget else ""
        full = " (full: the world stops growing)" if (
            scene.points_budget and points >= scene.points_budget) else ""
        depth = scene.depth_note  # the backend's own line says it best (and how to do better)
        if not depth.startswith("depth"):
            named = f"depth: {DEPTH_SOURCES.get(scene.depth_source, scene.depth_source)}"
            depth = f"{named} ({depth})" if depth else named
        return f"{points:,} points{budget}{full}", depth

    @staticmethod
    def _player_lines(player: ClipPlayer) -> list[str]:
        clip = player.clip
        if player.active and clip is not None:
            waiting = " (waiting for frames)" if player.state == PlayerState.STALLED else ""
            return [f"playing {clip.job_id.split('-')[0]} frame {player.shown_index + 1}/"
                    f"{clip.expected()}{waiting}"]
        if player.state == PlayerState.BUFFERING:
            return ["buffering the clip..."]
        return []

    @staticmethod
    def _bars(session: ExplorerSession) -> dict[str, JobBar]:
        bars = {}
        opening = session.opening_progress()
        if opening is not None:
            label, fraction = opening
            bars["open"] = JobBar(label, fraction)
        for job in session.jobs.values():
            if job.lost:
                label = f"{job.kind} lost with the backend: re-sent when it is back (X cancels)"
            elif not job.frames_received:
                label = f"{job.kind} {job.stage} {job.step}/{job.total}"
            else:
                label = f"{job.kind} frames {job.frames_received}/{job.num_frames}"
            if job.resent_from:
                label += " (re-sent)"
            bars[job.job_id] = JobBar(label, 0.0 if job.lost else job.fraction)
        return bars


class DepthLine:
    """The depth line: the backend's whole note for ``DEPTH_NOTE_S`` after it first shows,
    then one short line (in a small window the whole note wraps to several lines over the
    scene)."""

    def __init__(self) -> None:
        self._since: tuple[str, float] | None = None
        """(the note shown, when it first was)."""

    def line(self, source: str, note: str, now: float) -> str:
        if not note:
            return note
        if self._since is None or self._since[0] != note:
            self._since = (note, now)
        if now - self._since[1] < DEPTH_NOTE_S:
            return note
        return short_depth_line(source, note)


def short_depth_line(source: str, note: str) -> str:
    """One short line for the depth in use: its source, and for the pop-up guess whether the
    depth model is missing (the backend's note says "unavailable" then)."""
    if source == "model":
        return note.split(";")[0]  # "depth: <model id>"
    short = f"depth: {DEPTH_SOURCES.get(source, source)}"
    return f"{short} (no depth model)" if source == "prior" and "unavailable" in note else short
