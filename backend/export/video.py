"""A session's clips joined into one MP4, in the order they were made.

Each clip is decoded and its frames re-encoded (H.264, yuv420p) into one stream whose
timestamps follow every clip's own frame rate (a variable-rate file: a 24 fps transition
and a 12 fps loop both play at their speed). Undone clips are left out; clips of another
size than the first are an error (a session's clips share its size). Frames are streamed:
one decoded frame in memory at a time.
"""

from __future__ import annotations

from collections.abc import Callable
from fractions import Fraction
from pathlib import Path

import av

from backend.export.session_source import ExportError, SavedClip

TIME_BASE = Fraction(1, 90000)


def join_clips(clips: list[SavedClip], out: Path, progress: Callable[[int, int], None] | None = None,
               crf: int = 18) -> int:
    """Write ``clips`` (undone ones skipped) to ``out``; returns the frames written."""
    clips = [c for c in clips if not c.undone]
    if not clips:
        raise ExportError("the session has no clips to join")
    total = sum(len(c.poses) for c in clips)
    part = out.with_name(f".{out.name}.part.mp4")
    out.parent.mkdir(parents=True, exist_ok=True)
    written, t = 0, Fraction(0)
    try:
        with av.open(str(part), mode="w", format="mp4") as container:
            stream = None
            for clip in clips:
                with av.open(str(clip.path)) as source:
                    for frame in source.decode(video=0):
                        if stream is None:
                            stream = container.add_stream("libx264", rate=max(1, round(clip.fps)))
                            stream.width, stream.height = frame.width, frame.height
                            stream.pix_fmt = "yuv420p"
                            stream.time_base = TIME_BASE
                            stream.options = {"crf": str(crf), "preset": "veryfast"}
                        if (frame.width, frame.height) != (stream.width, stream.height):
                            raise ExportError(f"{clip.path.name} is {frame.width}x{frame.height}, "
                                              f"the first clip {stream.width}x{stream.height}")
                        image = frame.reformat(format="yuv420p")
                        image.pts, image.time_base = round(t / TIME_BASE), TIME_BASE
                        container.mux(stream.encode(image))
                        t += Fraction(1) / Fraction(clip.fps).limit_denominator(1000)
                        written += 1
                        if progress is not None:
                            progress(written, total)
            if stream is None:
                raise ExportError("the session's clips hold no frames")
            container.mux(stream.encode())
        part.replace(out)
    except BaseException:
        part.unlink(missing_ok=True)
        raise
    return written
