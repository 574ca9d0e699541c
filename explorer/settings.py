"""Explorer settings and key bindings: one typed object each, read from ``configs/``.

``ExplorerSettings.load(path)`` decodes ``configs/explorer.toml`` (or ``path``) with msgspec
into nested structs; a key missing from the file keeps its default, an unknown key or a
value of the wrong type is a :class:`SettingsError` that names it. The camera, player and
recorder take their section of this object as it is: there is no second copy of any field.
"""

from __future__ import annotations

from importlib import resources
from pathlib import Path
from typing import Literal

import msgspec

from protocol import splat_filter


class SettingsError(ValueError):
    """A settings or key-bindings file cannot be used; the message names the key."""


class _Section(msgspec.Struct, forbid_unknown_fields=True, kw_only=True):
    pass


class WindowSettings(_Section):
    width: int = 960
    """Window width in pixels when no ``--size`` is given and ``fit_photo`` is off."""
    height: int = 540
    fit_photo: bool = True
    """Size the window to the photo's aspect (its width stays ``width``)."""
    target_fps: float = 60.0
    vsync: bool = False
    background: list[float] = msgspec.field(default_factory=lambda: [0.02, 0.02, 0.03])
    """Clear colour, RGB in [0, 1]."""


class CameraSettings(_Section):
    speed: float = 0.25
    """Median depths per second at the default speed multiplier."""
    fast_factor: float = 4.0
    look_sensitivity: float = 0.0025
    """Radians per pixel of mouse motion."""
    scroll_step: float = 1.2
    """Speed multiplier per scroll notch."""
    smoothing: float = 12.0
    """1/s: how quickly velocity follows the keys (higher is snappier)."""
    max_pitch_deg: float = 85.0
    near_fraction: float = 0.01
    """Near plane in median depths."""
    far_fraction: float = 50.0
    """Smallest far plane in median depths; the cloud's own extent pushes it further."""
    far_margin: float = 1.5
    """The far plane is at least this many times the farthest point's distance."""


class PathSettings(_Section):
    transition_frames: int = 48
    fps: float = 24.0
    smooth: int = 2
    """Moving-average radius (poses) after resampling."""
    preset: str | None = None
    """Sampler preset sent with each transition (``paper``, ``interactive``); None: the
    backend's default."""


class PlayerSettings(_Section):
    min_prebuffer: int = 2
    """Frames buffered before any clip may start (also the minimum for a rate estimate)."""
    max_prebuffer: int = 8
    """Start at the latest with this many frames (at most ``network.credits``: checked)."""
    fade_s: float = 0.15
    clip_alpha: float = 1.0
    """Opacity of the clip drawn over the cloud."""
    show_every_frame: bool = False
    """Wait for every frame: the clip advances at most one frame per rendered frame, so a
    slow machine shows each one (and takes longer than the clip); false: the clip keeps the
    wall clock and skips what the renderer cannot show. Either way it ends on its last pose."""


class DynamicsSettings(_Section):
    num_frames: int = 48
    fps: float = 24.0
    arrow_frames: int = 24
    """A drag of L pixels moves L / arrow_frames pixels per frame."""
    brush_radius: int = 20
    """Radius of the freeze brush in window pixels."""


class NetworkSettings(_Section):
    credits: int = 8
    heartbeat_s: float = 1.0
    peer_timeout_s: float = 5.0
    connect_timeout_s: float = 20.0
    reconnect_s: float = 2.0
    """Wait between reconnection attempts after the backend is lost."""
    frame_codec: Literal["auto", "jpeg", "raw", "png"] = "auto"
    """How clip frames come back: ``auto`` asks a backend this explorer started itself for
    ``raw`` (lossless, nothing to encode; 0.8 MB a 512x512 frame on the same machine) and
    any other for ``jpeg`` (small, lossy: for networks)."""
    identity_file: str = ""
    """Where the loopback identity token is kept (mode 0600) so that a later run owns the
    scenes an earlier one made; empty: ``$XDG_CONFIG_HOME/dreamjourney/identity``
    (``~/.config`` without XDG_CONFIG_HOME)."""


    def codec_for(self, local_backend: bool) -> str:
        """``frame_codec`` resolved: ``auto`` is ``raw`` from a backend this explorer started
        (same machine: nothing to gain from lossy compression), else ``jpeg``."""
        if self.frame_codec != "auto":
            return self.frame_codec
        return "raw" if local_backend else "jpeg"


class RecordSettings(_Section):
    fps: float = 30.0
    queue_size: int = 8
    folder: str = "recordings"
    screenshot_folder: str = "screenshots"
    keep_hud: bool = False
    """Burn the HUD into recordings and screenshots (off: only the view is saved)."""


class PhotoSettings(_Section):
    working_size: int = 1024
    """Longest side, in pixels, of the photo sent to the backend (larger photos are scaled
    down; the original is kept in the session folder)."""
    max_pixels: int = 200_000_000
    """Photos with more pixels than this are refused before they are decoded."""


class SessionSettings(_Section):
    folder: str = "sessions"
    """Session folders (the local backend saves here; ``dreamjourney sessions`` lists them)."""


class DebugSettings(_Section):
    frame_sleep_s: float = 0.0
    """Sleep this long in every frame: a deliberately slow renderer, for tests."""
    encode_sleep_s: float = 0.0
    """Sleep this long per recorded picture on the encoder thread: a deliberately slow
    encoder, for tests (a stop then has seconds of finalising to do)."""


class SplatSettings(_Section):
    """How the cloud's points are drawn (see :class:`explorer.renderer.CloudRenderer`)."""

    antialias: bool = True
    """Screen-space Gaussian footprints blended near the front surface and normalised;
    false: opaque discs, the nearest point's colour only (faster, aliased)."""
    depth_tolerance: float = splat_filter.DEPTH_TOLERANCE
    """Footprints at most this much (relative to depth) behind the front surface blend."""
    sigma_scale: float = splat_filter.SIGMA_SCALE
    """Gaussian sigma of a footprint in units of the point's screen radius."""
    min_sigma_px: float = splat_filter.MIN_SIGMA_PX
    """Smallest sigma in pixels: the low-pass that keeps every splat at least a pixel."""
    cover_scale: float = 1.25
    """A footprint reaches this many screen radii (at least two sigmas) from its centre."""


class EditorSettings(_Section):
    """The keyframe path editor and the world export (see :mod:`explorer.path_tools`)."""

    orbit_deg: float = 30.0
    """Degrees the orbit key turns around the point under the cursor (Shift: the other way)."""
    orbit_keyframes: int = 3
    """Keyframes one orbit adds along its arc."""
    paths_folder: str = "paths"
    """Where F5 saves and F6 loads ``<scene>-path.json``."""
    exports_folder: str = "exports"
    """Where F8 writes ``<scene>-splats.ply``."""


class ExplorerSettings(_Section):
    window: WindowSettings = msgspec.field(default_factory=WindowSettings)
    camera: CameraSettings = msgspec.field(default_factory=CameraSettings)
    paths: PathSettings = msgspec.field(default_factory=PathSettings)
    player: PlayerSettings = msgspec.field(default_factory=PlayerSettings)
    dynamics: DynamicsSettings = msgspec.field(default_factory=DynamicsSettings)
    network: NetworkSettings = msgspec.field(default_factory=NetworkSettings)
    record: RecordSettings = msgspec.field(default_factory=RecordSettings)
    photo: PhotoSettings = msgspec.field(default_factory=PhotoSettings)
    session: SessionSettings = msgspec.field(default_factory=SessionSettings)
    debug: DebugSettings = msgspec.field(default_factory=DebugSettings)
    splats: SplatSettings = msgspec.field(default_factory=SplatSettings)
    editor: EditorSettings = msgspec.field(default_factory=EditorSettings)

    def __post_init__(self) -> None:
        """Keys that depend on each other (a file that breaks one is an error naming it)."""
        credits = self.network.credits
        for key in ("min_prebuffer", "max_prebuffer"):
            frames = getattr(self.player, key)
            if frames > credits:
                raise ValueError(f"player.{key} = {frames} is more than network.credits = "
                                 f"{credits}: a clip could never start")

    @classmethod
    def load(cls, path: str | Path | None = None) -> ExplorerSettings:
        """``configs/explorer.toml`` (or ``path``); missing keys keep their defaults."""
        return _decode(_read("explorer.toml", path), cls, path or "configs/explorer.toml")


class HelpRow(msgspec.Struct, array_like=True):
    keys: str
    does: str


class HelpTable(msgspec.Struct, forbid_unknown_fields=True):
    rows: list[HelpRow] = []
    """Rows of the F1 table: (keys, what they do)."""


class KeyBindings(msgspec.Struct, forbid_unknown_fields=True):
    keys: dict[str, str | list[str]]
    """Action name -> pyglet key name(s)."""
    help: HelpTable = msgspec.field(default_factory=HelpTable)

    @classmethod
    def load(cls, path: str | Path | None = None) -> KeyBindings:
        return _decode(_read("keys.toml", path), cls, path or "configs/keys.toml")

    @property
    def actions(self) -> dict[str, list[str]]:
        return {a: [v] if isinstance(v, str) else list(v) for a, v in self.keys.items()}

    def symbol_map(self) -> dict[int, str]:
        """pyglet key symbol -> action; raises SettingsError naming an unknown key."""
        from pyglet.window import key

        out: dict[int, str] = {}
        for action, names in self.actions.items():
            for name in names:
                symbol = getattr(key, name.upper() if not name.startswith("_") else name, None)
                if not isinstance(symbol, int):
                    raise SettingsError(f"key {name!r} for {action!r} is not a pyglet key name")
                out[symbol] = action
        return out


def _read(name: str, path: str | Path | None) -> bytes:
    if path is None:
        return resources.files("configs").joinpath(name).read_bytes()
    try:
        return Path(path).read_bytes()
    except OSError as exc:
        raise SettingsError(f"cannot read {path}: {exc.strerror}") from None


def _decode(data: bytes, cls, where):
    try:
        return msgspec.toml.decode(data, type=cls)
    except msgspec.ValidationError as exc:
        raise SettingsError(f"{where}: {exc}") from None
    except msgspec.DecodeError as exc:
        raise SettingsError(f"{where} is not valid TOML: {exc}") from None
