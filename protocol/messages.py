"""Every message on the wire, as typed msgspec Structs in one tagged union.

A message is a ZeroMQ multipart: frame 0 is one of these structs encoded as msgpack (the
``type`` field is the tag); frames 1.. are raw blobs (JPEG, PNG, arrays) that fields reference
by index through :class:`ImageRef` and :class:`ArrayRef`. Blob index 0 is the first frame
*after* the header.

Conventions, as in DESIGN.md:
- Poses are camera-to-world ``T_world_camera``, OpenCV camera axes (+x right, +y down,
  +z forward), 16 floats in row-major order. World = the scene's first view.
- Intrinsics ``K`` are 9 floats, row-major 3x3, in pixels.
- Images are H x W x 3 uint8 RGB. Depth is float32 z-depth in the units of the poses.
- Times are seconds (float). Ids are strings chosen by whoever creates the thing.

Over 400 lines on purpose: every wire message is a typed struct in this one module (as viser
keeps ``_messages.py``), so the whole protocol reads in one place.
"""

from __future__ import annotations

from typing import Annotated, Literal, Union

import msgspec
from msgspec import Meta

from protocol.errors import ErrorCode, JobFailCode

PROTOCOL_VERSION = 2
"""Bumped whenever a message gains or changes a field: every struct forbids unknown fields,
so peers of different versions would fail to decode each other. 2: Welcome.presets,
Transition.dynamics, PointsMotion."""

# Field types with their bounds, so the decoder itself rejects non-finite numbers (NaN fails
# every bound), wrong tuple lengths, huge strings and out-of-range counts.
Finite = Annotated[float, Meta(ge=-1e9, le=1e9)]
"""Any finite float in +-1e9."""
Fps = Annotated[float, Meta(gt=0.0, le=240.0)]
"""Frames per second, in (0, 240]."""
Id = Annotated[str, Meta(min_length=1, max_length=128)]
"""A request, job or scene id: 1-128 characters."""
Text = Annotated[str, Meta(max_length=4096)]
"""A prompt or other free text, at most 4096 characters."""
Name = Annotated[str, Meta(max_length=64)]
Count = Annotated[int, Meta(ge=0, le=1 << 31)]
BlobIndex = Annotated[int, Meta(ge=0, le=255)]
Pixels = Annotated[int, Meta(ge=1, le=1 << 16)]
ImageCodec = Literal["jpeg", "png", "raw"]
DepthSource = Literal["model", "given", "prior"]
"""Where a scene's first depth came from: the depth model, the explorer's map, or the prior."""
WireDtype = Literal["float32", "float64", "uint8", "uint16", "int32"]
"""The array dtypes that may go on the wire (little-endian)."""
"""``jpeg`` (4:2:0, lossy, small), ``png`` (lossless, slow to encode), ``raw`` (H x W x 3
uint8 RGB, row-major, no padding: lossless and free to encode, 3 bytes a pixel)."""

Pose = Annotated[tuple[Finite, ...], Meta(min_length=16, max_length=16)]
"""Camera-to-world 4x4, OpenCV axes, 16 floats row-major."""

Intrinsics = Annotated[tuple[Finite, ...], Meta(min_length=9, max_length=9)]
"""Pinhole K, 3x3 row-major in pixels (9 floats)."""

Vec2 = tuple[Finite, Finite]
"""Two floats, e.g. (u, v) in pixels."""


class ImageRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """An image carried in a blob frame."""

    blob: BlobIndex
    """Index of the blob frame (0 = first frame after the header)."""
    codec: ImageCodec
    """``raw`` is H x W x 3 uint8 RGB, row-major, no padding."""
    width: Pixels
    """Pixels."""
    height: Pixels
    """Pixels."""


class ArrayRef(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A numpy array carried in a blob frame, C order, little-endian."""

    blob: BlobIndex
    """Index of the blob frame (0 = first frame after the header)."""
    dtype: WireDtype
    shape: Annotated[list[Count], Meta(max_length=4)]
    """The blob holds exactly prod(shape) * itemsize bytes."""


class Arrow(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """A motion hint drawn on the paused view (Make-It-4D Eulerian flow)."""

    start: Vec2
    """(u, v) pixel where the arrow starts, in the view's image (v down)."""
    vector: Vec2
    """(du, dv) displacement in pixels per frame."""


class SceneText(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Text prompts describing a scene (the scenes.toml fields)."""

    style: Text = ""
    content: Text = ""
    negative: Text = ""
    background: Text = ""


class Message(msgspec.Struct, tag_field="type", forbid_unknown_fields=True):
    """Base of every message; ``type`` names the concrete struct."""


# --- handshake and liveness -------------------------------------------------------------


class Hello(Message, tag="hello"):
    """Explorer -> backend, first message on a connection."""

    protocol_version: Count
    """Must equal the backend's :data:`PROTOCOL_VERSION`, else an Error(version_mismatch)."""
    client: Name = "explorer"
    """Free-form client name for logs."""
    credits: Count = 8
    """Initial frame credit: frames the backend may send before the next Credit."""
    token: Annotated[str, Meta(max_length=128)] | None = None
    """On loopback, the identity token a previous Welcome handed out: the client owns the
    scenes that token created. None (or a token this backend did not issue) gets a new
    one. Ignored under CURVE, where the client's public key is its identity."""


class Welcome(Message, tag="welcome"):
    """Backend -> explorer, the answer to a good Hello."""

    protocol_version: int
    server: str
    engines: list[str]
    """Engines on offer, by name."""
    default_engine: str
    heartbeat_s: float
    """Interval at which the backend pings; the peer is declared gone after a few missed."""
    max_message_bytes: int
    """Largest message (all frames together) the backend accepts."""
    token: str = ""
    """The client's identity token on loopback: the Hello's token if this backend issued
    it, else a new one it signed (a token a client makes up is never accepted); keep it and
    send it in later Hellos to own the same scenes. Empty under CURVE."""
    presets: list[str] = []
    """Sampler presets a Transition's ``preset`` may name (``configs/models`` names such as
    ``interactive`` and ``paper``); empty when no offered engine takes one."""


class Ping(Message, tag="ping"):
    """Heartbeat, either direction. The other side answers with a Pong of the same seq."""

    seq: Count
    sent_at: Finite
    """Sender's monotonic clock, seconds; echoed back in the Pong."""


class Pong(Message, tag="pong"):
    seq: Count
    sent_at: Finite
    """The Ping's ``sent_at``, unchanged."""


class Credit(Message, tag="credit"):
    """Explorer -> backend: permission to send ``frames`` more Frame messages."""

    frames: Count


class Error(Message, tag="error"):
    """Either direction: a message could not be handled. The connection stays usable."""

    code: ErrorCode
    """See :mod:`protocol.errors` for what each code means."""
    message: str
    """One sentence a person can act on."""
    request_id: Annotated[str, Meta(max_length=128)] | None = None
    """The request, job or scene id the error answers, when known."""


# --- scenes -----------------------------------------------------------------------------


class OpenScene(Message, tag="open_scene"):
    """Explorer -> backend: lift a photo into a scene (or resume a saved one)."""

    request_id: Id
    scene_id: Id
    image: ImageRef | None = None
    """The photo; may be None only when ``resume`` is set."""
    K: Intrinsics | None = None
    """Intrinsics of the photo; None lets the backend assume a 60 degree horizontal FOV."""
    depth: ArrayRef | None = None
    """Optional H x W float32 z-depth for the photo, used when the engine has no depth model."""
    text: SceneText = SceneText()
    engine: Name | None = None
    """Engine name; None picks the backend's default."""
    resume: bool = False
    """Reload the saved session named ``scene_id`` instead of starting from ``image``."""


class SceneOpened(Message, tag="scene_opened"):
    """Backend -> explorer: the scene exists; its cloud follows as PointsDelta chunks."""

    request_id: str
    scene_id: str
    engine: str
    width: int
    height: int
    K: Intrinsics
    pose: Pose
    """Pose of the last view (identity for a new scene)."""
    median_depth: float
    """Median z-depth of the first view; speeds and presets scale with it."""
    num_points: int
    resumed: bool = False
    depth_source: DepthSource = "prior"
    """Where the first view's depth came from: a depth model, the explorer's map, or the
    pop-up prior (a guess: sky, ground, and standing things upright on the ground)."""
    depth_note: str = ""
    """One line for the HUD about the depth in use, e.g. how to get the model."""
    points_budget: int = 0
    """Most points the backend keeps for this scene (0 = unbounded)."""
    session: Annotated[str, Meta(max_length=160)] = ""
    """The scene's session folder: a plain name under the backend's sessions root
    (``<scene_id>-<random>``); an explorer that started its backend keeps the original photo
    there."""


class PointsDelta(Message, tag="points_delta"):
    """Backend -> explorer: points appended to a scene's cloud (never replaced)."""

    scene_id: str
    chunk: int
    """0-based chunk index within this append."""
    last: bool
    """True on the final chunk of this append."""
    xyz: ArrayRef
    """N x 3 float32 world positions."""
    rgb: ArrayRef
    """N x 3 uint8 colours."""
    radius: ArrayRef
    """N float32 world-space splat radii (pixel footprint at the point's depth)."""
    total_points: int
    """Points in the scene's cloud once this chunk is applied."""
    job_id: str | None = None


class PointsMotion(Message, tag="points_motion"):
    """Backend -> explorer: 4D points. Sets the looping motion of some of a scene's points
    (``backend.geometry.motion``): after a dynamics job (its region's points start moving),
    after opening or resuming a scene with moving points, and after an undo (the points get
    back the motion they had). Each moving point is drawn as two copies, at
    ``p + tau d`` (weight ``1 - tau``) and ``p - (1 - tau) d`` (weight ``tau``), ``tau`` the
    fraction of its period elapsed on the wall clock: one seamless loop."""

    scene_id: str
    index: ArrayRef
    """M int32 indices of the points set, into the scene's cloud (its order of appends)."""
    motion: ArrayRef
    """M x 4 float32: world-space displacement over one loop (dx, dy, dz in world units, the
    poses' units; OpenCV world axes) and the loop's period in seconds (0 = the point is
    static)."""
    regions: list[Annotated[str, Meta(max_length=200)]]
    """Every region of the scene moving once this applies, oldest first (for the HUD)."""
    total_points: int
    """Points in the scene's cloud (every index is below it)."""
    job_id: str | None = None
    """The dynamics job that made this motion; None on open, resume and undo."""


# --- jobs -------------------------------------------------------------------------------


class TransitionDynamics(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """What makes a transition dynamic: the scene moves while the camera flies.

    The diffusion engine composes, at every sampling step i of N, the camera-guided score
    (Stage I) with the dynamics prompt's score (Stage II) as Diffusion^2's eq. 16:
    (1 - s) * camera + s * dynamics, s = 1 - 1/(1 + exp(k (i/N - s0))). The classic engine
    renders the scene's 4D points (a dynamics result kept in the world) at each frame's time.
    """

    prompt: Text | None = None
    """The dynamics prompt (what moves and how, e.g. "the river flows left, mist drifts") for
    the diffusion engine's Stage II score; None: the MLLM writes it from the start view
    (templates without an endpoint). The classic engine does not use it."""
    start_s: Annotated[float, Meta(ge=0.0, le=1e9)] = 0.0
    """Seconds on the world-motion clock at the clip's first frame: frame j shows the world at
    ``start_s + j / fps`` (where each moving point is on its loop), so the clip continues the
    motion the explorer showed when it was sent."""
    k: Annotated[float, Meta(gt=0.0, le=1e6)] | None = None
    """Steepness of the logistic weight s (dimensionless; the paper tests 5-30); None: the
    preset's ``dynamics_k``."""
    s0: Annotated[float, Meta(ge=0.0, le=1.0)] | None = None
    """Share of the sampling steps (0..1) where s passes 1/2; None: the preset's
    ``dynamics_s0``."""


class Transition(Message, tag="transition"):
    """Explorer -> backend: generate a clip along a camera path and grow the cloud."""

    job_id: Id
    scene_id: Id
    poses: ArrayRef
    """N x 4 x 4 float32 camera-to-world poses, the first at the current view. float32 is the
    one wire precision (7 digits: a millimetre at 10 km); the backend checks them once and
    computes in float64 (``backend.wire``)."""
    fps: Fps = 24.0
    engine: Name | None = None
    prompt: Text | None = None
    """Overrides the engine's prompt for this clip."""
    seed: Count | None = None
    preset: Name | None = None
    """Sampler preset (``paper``, ``interactive``); None uses the engine's default."""
    frame_codec: ImageCodec = "jpeg"
    """How the clip's Frames are encoded: ``jpeg`` across a network; ``raw`` from a backend
    on the same machine (no compression noise in the frames or the points they grow)."""
    dynamics: TransitionDynamics | None = None
    """Set: a dynamic transition (the scene moves while the camera flies); None: the world
    stands still along the path."""


class Dynamics(Message, tag="dynamics"):
    """Explorer -> backend: animate the paused view (a looping clip at a fixed pose)."""

    job_id: Id
    scene_id: Id
    pose: Pose
    num_frames: Annotated[int, Meta(ge=1, le=1024)] = 48
    """The backend's configured ``max_frames`` may be lower (answered with a clear error)."""
    fps: Fps = 24.0
    arrows: Annotated[list[Arrow], Meta(max_length=64)] = []
    frozen: ArrayRef | None = None
    """Optional H x W uint8 mask in the view's pixels; nonzero pixels stay still."""
    engine: Name | None = None
    prompt: Text | None = None
    seed: Count | None = None
    frame_codec: ImageCodec = "jpeg"
    """As ``Transition.frame_codec``."""


class SelectRegion(Message, tag="select_region"):
    """Explorer -> backend: which region would these arrows animate at this pose? Answered by
    :class:`RegionOutline`; a Dynamics with the same pose, arrows and frozen mask animates
    exactly that region."""

    request_id: Id
    scene_id: Id
    pose: Pose
    """The paused view, camera-to-world (OpenCV), as ``Dynamics.pose``."""
    arrows: Annotated[list[Arrow], Meta(min_length=1, max_length=64)]
    """As ``Dynamics.arrows``: start (u, v) in the view's pixels, vector in pixels per frame."""
    frozen: ArrayRef | None = None
    """As ``Dynamics.frozen``: optional H x W uint8 mask in the view's pixels, nonzero = still."""


class RegionOutline(Message, tag="region_outline"):
    """Backend -> explorer: the border of the region a :class:`SelectRegion` would animate."""

    request_id: str
    scene_id: str
    points: ArrayRef
    """N x 2 float32: the border's vertices, (u, v) in the view's pixels (pixel centres at
    .5), its closed polylines one after another."""
    lengths: list[int]
    """Vertices in each closed polyline, in order (they sum to N; empty: no region)."""
    coverage: float
    """Share of the view's pixels inside the region, 0..1."""


class Cancel(Message, tag="cancel"):
    """Explorer -> backend: stop a job at its next step boundary."""

    job_id: Id


class Undo(Message, tag="undo"):
    """Explorer -> backend: take back the scene's last transition (its clip and its points)
    or the last dynamics result kept in the world (its clip and its motion)."""

    request_id: Id
    scene_id: Id


class Undone(Message, tag="undone"):
    """Backend -> explorer: the last transition is gone; the cloud is its first
    ``total_points`` points again (points are only ever appended, so a truncation). An
    undone dynamics result comes as ``PointsMotion`` (the points' motion before) first."""

    request_id: str
    scene_id: str
    job_id: str | None
    """The transition taken back; None when there was nothing to undo."""
    total_points: int


class JobAccepted(Message, tag="job_accepted"):
    job_id: str
    kind: Literal["transition", "dynamics"]
    num_frames: int
    queue_position: int
    """0 = running now."""


class Progress(Message, tag="progress"):
    """Backend -> explorer: how far a job (or a scene's opening) is; the wire form of the
    engines' ``ProgressOut`` event."""

    job_id: str
    stage: str
    """Short stage name: ``download`` and ``load`` (a model's first use), ``render``,
    ``prompt``, ``inpaint``, ``sample`` (one per denoising step), ``view``, ``grow``,
    ``keep`` (a dynamics clip's region set moving in the scene, after its frames)."""
    step: int
    total: int
    message: str = ""
    """Optional sentence for the status line."""


class Frame(Message, tag="frame"):
    """Backend -> explorer: one frame of a clip; counts against the explorer's credit."""

    job_id: str
    index: int
    """0-based frame index in the clip."""
    num_frames: int
    pose: Pose
    K: Intrinsics
    image: ImageRef
    fps: float
    loop: bool = False
    """True for dynamics clips, which are meant to be looped."""


class JobDone(Message, tag="job_done"):
    job_id: str
    num_frames: int
    timings: dict[str, float] = {}
    """Seconds per stage, plus ``total``."""
    clip: str | None = None
    """Where the backend saved the clip: a path relative to its sessions root
    (``<session>/clips/NNNN.mp4``); None when clips are not saved."""


class JobFailed(Message, tag="job_failed"):
    job_id: str
    code: JobFailCode
    message: str


# --- operators ---------------------------------------------------------------------------


class Status(Message, tag="status"):
    """Operator -> backend: how busy is it? Answered by a StatusReply."""

    request_id: Id


class WorkerState(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """One engine worker: an in-process job slot, or a Ray actor with ``--cluster``."""

    name: str
    node: str
    """Host (IP) the worker runs on."""
    device: str
    """E.g. ``cpu`` or ``cuda:0 (NVIDIA H100)``."""
    engines: list[str]
    """Engines (and their models) resident in the worker."""
    state: Literal["idle", "busy", "restarting", "lost"]
    job_kind: str | None = None
    scene_id: str | None = None
    busy_s: float = 0.0
    """Seconds the current job has run."""
    overdue: bool = False
    """Busy past the configured deadline."""
    jobs_done: int = 0
    restarts: int = 0


class ClientQueue(msgspec.Struct, frozen=True, forbid_unknown_fields=True):
    """Jobs one explorer has accepted and not finished."""

    client: str
    """The explorer's identity: ``curve:<public key>``, or ``token:<digest>`` on loopback."""
    running: int
    queued: int


class StatusReply(Message, tag="status_reply"):
    """Backend -> operator: workers, queues per explorer, jobs running."""

    request_id: str
    cluster: str
    """Ray address the workers run on; empty for an in-process backend."""
    workers: list[WorkerState]
    clients: list[ClientQueue]
    jobs_running: int
    jobs_queued: int


AnyMessage = Union[  # noqa: UP007 - msgspec needs a real Union for the tagged decoder
    Hello,
    Welcome,
    Ping,
    Pong,
    Credit,
    Error,
    OpenScene,
    SceneOpened,
    PointsDelta,
    PointsMotion,
    Transition,
    Dynamics,
    SelectRegion,
    RegionOutline,
    Cancel,
    Undo,
    Undone,
    JobAccepted,
    Progress,
    Frame,
    JobDone,
    JobFailed,
    Status,
    StatusReply,
]

ALL_MESSAGES: tuple[type[Message], ...] = AnyMessage.__args__  # type: ignore[attr-defined]
