"""Multipart framing: a message struct in frame 0, raw blobs after it, zero-copy both ways.

``encode`` returns a list of frames for ``socket.send_multipart(frames, copy=False)``;
``decode`` takes the frames from ``socket.recv_multipart(copy=False)`` (zmq.Frame objects,
bytes or memoryviews) and returns the struct with its blobs as memoryviews, never copying
a blob. Arrays and images are turned into blobs (and back) by the helpers below, which
check dtype, shape and size against the references.
"""

from __future__ import annotations

import io
from collections.abc import Sequence
from typing import Any, cast, get_args

import msgspec
import numpy as np
import simplejpeg

from protocol.limits import (
    DEFAULT_LIMITS,
    BadArray,
    BadBlob,
    BadImage,
    BadMessage,
    BadValue,
    Limits,
    ProtocolError,
    TooLarge,
    UnknownType,
)
from protocol.messages import (
    ALL_MESSAGES,
    AnyMessage,
    ArrayRef,
    Dynamics,
    ImageCodec,
    ImageRef,
    Message,
    PointsDelta,
    PointsMotion,
    Transition,
    WireDtype,
)

_encoder = msgspec.msgpack.Encoder()
_decoder = msgspec.msgpack.Decoder(AnyMessage)
_TAGS = {str(cls.__struct_config__.tag) for cls in ALL_MESSAGES}

Blob = Any
"""bytes, bytearray, memoryview, numpy array or zmq.Frame: anything with the buffer protocol."""


def _view(blob: Blob) -> memoryview:
    view = memoryview(blob)  # zmq.Frame, bytes and arrays all export their buffer
    if view.ndim == 1 and view.format == "B" and view.c_contiguous:
        return view  # what a received zmq.Frame gives: no cast needed
    return view.cast("B")


def encode(msg: Message, blobs: Sequence[Blob] = ()) -> list[Blob]:
    """Frames of one message: the msgpack header, then the blobs as they are (no copy).

    A blob without the buffer protocol raises TypeError here, on the caller's thread, so
    the I/O threads (``protocol.multipart.send_parts``) only ever send buffers."""
    for blob in blobs:
        if type(blob) is not bytes:
            memoryview(blob)
    return [_encoder.encode(msg), *blobs]


def decode(frames: Sequence[Blob], limits: Limits = DEFAULT_LIMITS, *,
           image_headers: bool = True) -> tuple[Message, list[memoryview]]:
    """Decode and validate one multipart message.

    Whatever the bytes, this raises only :class:`ProtocolError` subclasses: it is safe to call
    on anything a peer sent, on a thread that must not die. ``image_headers=False`` leaves
    each compressed image's own header (its size against the reference) to
    :func:`decode_image`, which reads it anyway before decoding a pixel: for a receiver that
    decodes every image it keeps, and whose I/O thread is the stream's narrowest point (the
    explorer's client: ``benchmarks/transport.py``, about 10% more frames per second).
    """
    try:
        return _decode(frames, limits, image_headers)
    except ProtocolError:
        raise
    except Exception as exc:  # e.g. RecursionError, UnicodeDecodeError, overflow: still bad input
        raise BadMessage(f"undecodable message ({type(exc).__name__}: {str(exc)[:200]})") from None


def _decode(frames: Sequence[Blob], limits: Limits, image_headers: bool) -> tuple[Message, list[memoryview]]:
    if not frames:
        raise BadMessage("empty message")
    views = [_view(f) for f in frames]
    total = sum(v.nbytes for v in views)
    if total > limits.max_message_bytes:
        raise TooLarge(f"message of {total} bytes exceeds the limit of {limits.max_message_bytes}")
    if len(frames) - 1 > limits.max_blobs:
        raise TooLarge(f"{len(frames) - 1} blob frames exceed the limit of {limits.max_blobs}")
    header = views[0]
    if header.nbytes > limits.max_header_bytes:
        raise TooLarge(f"header of {header.nbytes} bytes exceeds {limits.max_header_bytes}")
    msg = _decode_header(header)
    blobs = views[1:]
    _check_refs(msg, blobs, limits, image_headers)
    return msg, blobs


def _tag_first(header: memoryview) -> bool:
    """The header is a map whose first key is ``type`` (our encoder always writes it first).

    With the tag first and every field typed, msgspec rejects a nested value at its first
    wrong level, so nesting depth is bounded by the message types, never by the peer.
    """
    lead = header[:10].tobytes()
    if not lead:
        return False
    b = lead[0]
    skip = 1 if 0x80 <= b <= 0x8F else 3 if b == 0xDE else 5 if b == 0xDF else 0
    return skip > 0 and lead[skip : skip + 5] == b"\xa4type"


def _decode_header(header: memoryview) -> Message:
    if not _tag_first(header):
        raise BadMessage("header must be a msgpack map whose first key is 'type'")
    try:
        return _decoder.decode(header)
    except msgspec.ValidationError as exc:
        text = str(exc)
        if "Invalid value" in text and "`$.type`" in text:
            raise UnknownType(f"unknown message type: {text}") from None
        if text.endswith("at `$`") or "- at" not in text:
            raise BadMessage(f"header is not a message struct: {text}") from None
        raise BadValue(f"invalid message: {text}") from None
    except msgspec.DecodeError as exc:
        raise BadMessage(f"header is not valid msgpack: {exc}") from None


def _may_hold_ref(t: msgspec.inspect.Type) -> bool:
    """Whether a field of type ``t`` can hold an ImageRef or ArrayRef."""
    if isinstance(t, msgspec.inspect.UnionType):
        return any(_may_hold_ref(u) for u in t.types)
    if isinstance(t, msgspec.inspect.Metadata):
        return _may_hold_ref(t.type)
    if isinstance(t, msgspec.inspect.StructType):
        return t.cls in (ImageRef, ArrayRef)
    return isinstance(t, msgspec.inspect.AnyType)


_REF_FIELDS: dict[type, tuple[str, ...]] = {}
"""Message type -> its fields that can hold a blob reference (worked out once per type)."""


def _ref_fields(cls: type) -> tuple[str, ...]:
    fields = _REF_FIELDS.get(cls)
    if fields is None:
        info = msgspec.inspect.type_info(cls)
        assert isinstance(info, msgspec.inspect.StructType)
        fields = _REF_FIELDS[cls] = tuple(f.name for f in info.fields if _may_hold_ref(f.type))
    return fields


def _check_refs(msg: Message, blobs: list[memoryview], limits: Limits, image_headers: bool) -> None:
    used: list[int] = []
    for name in _ref_fields(type(msg)):
        ref = getattr(msg, name)
        if isinstance(ref, (ImageRef, ArrayRef)):
            if not 0 <= ref.blob < len(blobs):
                raise BadBlob(f"field {name!r} references blob {ref.blob}, message has {len(blobs)}")
            used.append(ref.blob)
            if isinstance(ref, ArrayRef):
                _check_array_ref(name, ref, blobs[ref.blob], limits)
            else:
                _check_image_ref(name, ref, blobs[ref.blob], limits, image_headers)
    if len(used) > 1 and len(set(used)) != len(used):
        raise BadBlob("two fields reference the same blob")
    if isinstance(msg, PointsDelta):
        n = msg.xyz.shape[0] if msg.xyz.shape else 0
        if n > limits.max_points_per_chunk:
            raise TooLarge(f"{n} points in one chunk exceed {limits.max_points_per_chunk}")
        _expect_shape("xyz", msg.xyz, [n, 3], "float32")
        _expect_shape("rgb", msg.rgb, [n, 3], "uint8")
        _expect_shape("radius", msg.radius, [n], "float32")
    elif isinstance(msg, PointsMotion):
        n = msg.index.shape[0] if msg.index.shape else 0
        if n > limits.max_points_per_chunk:
            raise TooLarge(f"{n} moving points in one message exceed {limits.max_points_per_chunk}")
        _expect_shape("index", msg.index, [n], "int32")
        _expect_shape("motion", msg.motion, [n, 4], "float32")
    elif isinstance(msg, Transition):
        shape = msg.poses.shape
        if len(shape) != 3 or shape[1:] != [4, 4] or shape[0] < 2:
            raise BadArray(f"poses must be N x 4 x 4 with N >= 2, got {shape}")
        if shape[0] > limits.max_trajectory_len:
            raise TooLarge(f"trajectory of {shape[0]} poses exceeds this backend's limit of "
                           f"{limits.max_trajectory_len} frames per clip")
    elif isinstance(msg, Dynamics) and not 1 <= msg.num_frames <= limits.max_trajectory_len:
        raise BadValue(f"num_frames must be in [1, {limits.max_trajectory_len}] (this backend's "
                       "limit of frames per clip)")


def _expect_shape(name: str, ref: ArrayRef, shape: list[int], dtype: str) -> None:
    if ref.shape != shape or ref.dtype != dtype:
        raise BadArray(f"{name} must be {dtype} {shape}, got {ref.dtype} {ref.shape}")


def _check_array_ref(name: str, ref: ArrayRef, blob: memoryview, limits: Limits) -> None:
    if any(d < 0 for d in ref.shape):
        raise BadArray(f"{name}: negative dimension in shape {ref.shape}")
    count = 1
    for d in ref.shape:  # Python ints: a [2**32, 2**32] shape cannot overflow
        count *= int(d)
    if count > limits.max_array_elements:
        raise TooLarge(f"{name}: {count} elements exceed {limits.max_array_elements}")
    expected = count * np.dtype(ref.dtype).itemsize
    if blob.nbytes != expected:
        raise BadArray(
            f"{name}: {ref.dtype} {ref.shape} needs {expected} bytes, blob has {blob.nbytes}"
        )


def _check_image_ref(name: str, ref: ImageRef, blob: memoryview, limits: Limits,
                     image_headers: bool) -> None:
    if image_headers and ref.codec != "raw" and blob.nbytes > 0:
        check_image_header(ref, blob, limits)
    if ref.width <= 0 or ref.height <= 0:
        raise BadImage(f"{name}: image size must be positive, got {ref.width}x{ref.height}")
    if ref.width * ref.height > limits.max_image_pixels:
        raise TooLarge(f"{name}: {ref.width}x{ref.height} exceeds {limits.max_image_pixels} pixels")
    if ref.codec == "raw" and blob.nbytes != ref.width * ref.height * 3:
        raise BadImage(f"{name}: raw {ref.width}x{ref.height} RGB needs {ref.width * ref.height * 3} bytes")


# --- arrays -----------------------------------------------------------------------------


def array_blob(arr: np.ndarray, index: int) -> tuple[ArrayRef, np.ndarray]:
    """Reference and contiguous little-endian buffer for ``arr`` placed at blob ``index``."""
    a = np.ascontiguousarray(arr)
    if a.dtype.byteorder == ">":
        a = a.astype(a.dtype.newbyteorder("<"))
    name = a.dtype.name
    if name not in get_args(WireDtype):
        raise BadArray(f"dtype {name} cannot go on the wire")
    return ArrayRef(blob=index, dtype=cast(WireDtype, name), shape=list(a.shape)), a


def read_array(ref: ArrayRef, blobs: Sequence[memoryview]) -> np.ndarray:
    """A read-only numpy view of the referenced blob (no copy); checked as in ``decode``."""
    if not 0 <= ref.blob < len(blobs):
        raise BadBlob(f"blob {ref.blob} out of range ({len(blobs)} blobs)")
    _check_array_ref("array", ref, blobs[ref.blob], DEFAULT_LIMITS)
    return np.frombuffer(blobs[ref.blob], dtype=np.dtype(ref.dtype).newbyteorder("<")).reshape(ref.shape)


# --- images -----------------------------------------------------------------------------


def _check_rgb(img: np.ndarray) -> np.ndarray:
    if img.ndim != 3 or img.shape[2] != 3 or img.dtype != np.uint8:
        raise BadImage(f"images must be H x W x 3 uint8, got {img.dtype} {img.shape}")
    return np.ascontiguousarray(img)


def encode_image(
    img: np.ndarray, codec: ImageCodec | str = "jpeg", index: int = 0, quality: int = 90
) -> tuple[ImageRef, bytes]:
    """Reference and blob for an H x W x 3 uint8 RGB image; JPEG is 4:2:0 (libjpeg-turbo)."""
    img = _check_rgb(img)
    h, w = img.shape[:2]
    if codec == "jpeg":
        data = simplejpeg.encode_jpeg(img, quality=quality, colorspace="RGB", colorsubsampling="420")
    elif codec == "png":
        from PIL import Image

        buf = io.BytesIO()
        Image.fromarray(img).save(buf, format="PNG", compress_level=1)
        data = buf.getvalue()
    elif codec == "raw":
        data = img.tobytes()
    else:
        raise BadImage(f"unknown image codec {codec!r}; use jpeg, png or raw")
    return ImageRef(blob=index, codec=cast(ImageCodec, codec), width=w, height=h), data


def image_header_size(codec: str, data: memoryview) -> tuple[int, int]:
    """(width, height) read from a JPEG or PNG header, without decoding any pixels."""
    raw = data[:24].tobytes() if codec == "png" else data
    try:
        if codec == "jpeg":
            height, width, _, _ = simplejpeg.decode_jpeg_header(raw if data.contiguous else bytes(raw))
            return int(width), int(height)
        if codec == "png":
            if raw[:8] != b"\x89PNG\r\n\x1a\n" or raw[12:16] != b"IHDR":
                raise BadImage("not a PNG (no signature and IHDR chunk)")
            return int.from_bytes(raw[16:20], "big"), int.from_bytes(raw[20:24], "big")
    except BadImage:
        raise
    except Exception as exc:
        raise BadImage(f"cannot read the {codec} header: {exc}") from None
    raise BadImage(f"unknown image codec {codec!r}")


def check_image_header(ref: ImageRef, data: memoryview, limits: Limits = DEFAULT_LIMITS) -> None:
    """The blob's own header agrees with the reference and is within the pixel limit.

    Called before any decode: a 600-byte JPEG may claim 60000 x 60000 pixels.
    """
    width, height = image_header_size(ref.codec, data)
    if width * height > limits.max_image_pixels:
        raise TooLarge(f"image header says {width}x{height}, over the limit of "
                       f"{limits.max_image_pixels} pixels")
    if (width, height) != (ref.width, ref.height):
        raise BadImage(f"image header says {width}x{height}, the reference {ref.width}x{ref.height}")


def decode_image(ref: ImageRef, blobs: Sequence[memoryview], limits: Limits = DEFAULT_LIMITS) -> np.ndarray:
    """H x W x 3 uint8 RGB from a referenced blob; the decoded size must match the reference.

    The header is checked against the reference and ``limits`` before any pixel is decoded.
    """
    if not 0 <= ref.blob < len(blobs):
        raise BadBlob(f"blob {ref.blob} out of range ({len(blobs)} blobs)")
    data = blobs[ref.blob]
    if ref.width * ref.height > limits.max_image_pixels:
        raise TooLarge(f"{ref.width}x{ref.height} exceeds {limits.max_image_pixels} pixels")
    if ref.codec != "raw":
        check_image_header(ref, data, limits)
    try:
        if ref.codec == "raw":
            img = np.frombuffer(data, dtype=np.uint8).reshape(ref.height, ref.width, 3)
        elif ref.codec == "jpeg":
            img = simplejpeg.decode_jpeg(bytes(data) if not data.contiguous else data, colorspace="RGB")
        else:
            from PIL import Image

            with Image.open(io.BytesIO(data)) as im:
                if im.width * im.height > limits.max_image_pixels:
                    raise TooLarge(f"PNG of {im.width}x{im.height} exceeds the pixel limit")
                img = np.asarray(im.convert("RGB"))
    except ProtocolError:
        raise
    except Exception as exc:  # codec libraries raise many types for corrupt data
        raise BadImage(f"cannot decode {ref.codec} image: {exc}") from None
    if img.shape[:2] != (ref.height, ref.width):
        raise BadImage(f"image is {img.shape[1]}x{img.shape[0]}, reference says {ref.width}x{ref.height}")
    return img


def pose_list(pose: np.ndarray) -> tuple[float, ...]:
    """16 floats, row-major, from a 4x4 pose (the wire's ``Pose``)."""
    p = np.asarray(pose, dtype=np.float64)
    if p.shape != (4, 4):
        raise BadValue(f"pose must be 4x4, got {p.shape}")
    return tuple(p.reshape(-1).tolist())


def pose_array(values: Sequence[float]) -> np.ndarray:
    """4x4 float64 pose from 16 row-major floats."""
    if len(values) != 16:
        raise BadValue(f"pose must have 16 floats, got {len(values)}")
    return np.asarray(values, dtype=np.float64).reshape(4, 4)


def k_list(K: np.ndarray) -> tuple[float, ...]:
    """9 floats, row-major, from 3 x 3 intrinsics (the wire's ``Intrinsics``)."""
    return tuple(np.asarray(K, dtype=np.float64).reshape(-1).tolist())


def k_array(values: Sequence[float]) -> np.ndarray:
    if len(values) != 9:
        raise BadValue(f"K must have 9 floats, got {len(values)}")
    return np.asarray(values, dtype=np.float64).reshape(3, 3)


def message_tags() -> set[str]:
    """Every tag the decoder accepts."""
    return set(_TAGS)
