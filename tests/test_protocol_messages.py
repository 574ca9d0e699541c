"""Every message type round-trips through the multipart codec, blobs included."""

from __future__ import annotations

import typing

import msgspec
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol import codec
from protocol.limits import BadArray, BadBlob, BadImage, TooLarge
from protocol.messages import (
    ALL_MESSAGES,
    ArrayRef,
    Dynamics,
    Frame,
    ImageRef,
    PointsDelta,
    PointsMotion,
    SceneText,
    Transition,
)

finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
text = st.text(max_size=20)


def _annotated(base, meta: msgspec.Meta) -> st.SearchStrategy:
    """A strategy for ``Annotated[base, meta]`` that respects the bounds in ``meta``."""
    if base is float:
        lo = meta.ge if meta.ge is not None else meta.gt
        return st.floats(lo, meta.le, allow_nan=False, allow_infinity=False,
                         exclude_min=meta.gt is not None)
    if base is int:
        return st.integers(meta.ge if meta.ge is not None else -(2**40),
                           meta.le if meta.le is not None else 2**40)
    if base is str:
        return st.text(min_size=meta.min_length or 0, max_size=min(meta.max_length or 20, 20))
    inner = _strategy(typing.get_args(base)[0])
    lo = meta.min_length or 0
    hi = min(meta.max_length or 5, 5) if meta.min_length is None else meta.max_length
    strategy = st.lists(inner, min_size=lo, max_size=hi)
    return strategy.map(tuple) if typing.get_origin(base) is tuple else strategy


def _strategy(tp) -> st.SearchStrategy:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is typing.Annotated:
        return _annotated(args[0], args[1])
    if origin is tuple and len(args) == 2 and args[1] is not Ellipsis:
        return st.tuples(*(_strategy(a) for a in args))
    if tp is str:
        return text
    if tp is int:
        return st.integers(-(2**40), 2**40)
    if tp is float:
        return finite
    if tp is bool:
        return st.booleans()
    if tp in (ImageRef, ArrayRef):
        return st.just(tp)  # placeholder; _materialise() makes a real ref and blob
    if tp is SceneText:
        return st.builds(SceneText, style=text, content=text, negative=text, background=text)
    if origin is typing.Literal:
        return st.sampled_from(args)
    if origin in (typing.Union, getattr(__import__("types"), "UnionType", None)):
        return st.one_of([_strategy(a) for a in args])
    if tp is type(None):
        return st.none()
    if origin is list:
        return st.lists(_strategy(args[0]), max_size=5)
    if origin is dict:
        return st.dictionaries(_strategy(args[0]), _strategy(args[1]), max_size=4)
    if isinstance(tp, type) and issubclass(tp, msgspec.Struct):
        return _struct(tp)
    raise NotImplementedError(tp)


def _struct(cls) -> st.SearchStrategy:
    hints = typing.get_type_hints(cls, include_extras=True)
    return st.fixed_dictionaries({f: _strategy(hints[f]) for f in cls.__struct_fields__}).map(
        lambda kw: cls(**kw)
    )


def _materialise(msg, rng: np.random.Generator):
    """Replace placeholder refs by real ones with matching blobs; fix fields whose shape is fixed."""
    blobs: list[bytes] = []
    changes = {}
    n_points = int(rng.integers(0, 50))

    def add_array(a: np.ndarray) -> ArrayRef:
        ref, buf = codec.array_blob(a, len(blobs))
        blobs.append(buf.tobytes())
        return ref

    for name in msg.__struct_fields__:
        value = getattr(msg, name)
        if value is ImageRef:
            h, w = int(rng.integers(1, 24)), int(rng.integers(1, 24))
            img = rng.integers(0, 256, (h, w, 3), dtype=np.uint8)
            name_ = str(rng.choice(["jpeg", "png", "raw"]))
            ref, data = codec.encode_image(img, codec=name_, index=len(blobs))
            blobs.append(data)
            changes[name] = ref
        elif value is ArrayRef:
            if isinstance(msg, PointsDelta):
                a = {
                    "xyz": rng.standard_normal((n_points, 3)).astype(np.float32),
                    "rgb": rng.integers(0, 256, (n_points, 3), dtype=np.uint8),
                    "radius": rng.random(n_points).astype(np.float32),
                }[name]
            elif isinstance(msg, PointsMotion):
                a = {"index": rng.integers(0, 1000, n_points).astype(np.int32),
                     "motion": rng.random((n_points, 4)).astype(np.float32)}[name]
            elif isinstance(msg, Transition):
                a = np.tile(np.eye(4, dtype=np.float32), (int(rng.integers(2, 9)), 1, 1))
            else:
                a = rng.integers(0, 2, (int(rng.integers(1, 9)), int(rng.integers(1, 9))), dtype=np.uint8)
            changes[name] = add_array(a)
    if isinstance(msg, Dynamics):
        changes["pose"] = tuple(np.eye(4).reshape(-1).tolist())
        changes["num_frames"] = int(rng.integers(1, 100))
    return msgspec.structs.replace(msg, **changes), blobs


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=lambda c: c.__name__)
def test_round_trip_every_message(cls):
    @settings(max_examples=40, deadline=None)
    @given(msg=_struct(cls), seed=st.integers(0, 2**32 - 1))
    def check(msg, seed):
        msg, blobs = _materialise(msg, np.random.default_rng(seed))
        frames = codec.encode(msg, blobs)
        out, out_blobs = codec.decode(frames)
        assert out == msg
        assert [bytes(b) for b in out_blobs] == blobs
        for name in msg.__struct_fields__:
            ref = getattr(msg, name)
            if isinstance(ref, ArrayRef):
                assert codec.read_array(ref, out_blobs).tobytes() == blobs[ref.blob]
            elif isinstance(ref, ImageRef):
                img = codec.decode_image(ref, out_blobs)
                assert img.shape == (ref.height, ref.width, 3)

    check()


@pytest.mark.parametrize("cls", ALL_MESSAGES, ids=lambda c: c.__name__)
def test_every_blob_reference_is_checked(cls):
    """Each field that can hold an ImageRef or ArrayRef (read from the annotations here, not
    from the codec's own list) is checked on decode: pointed past the blobs, it is refused."""
    hints = typing.get_type_hints(cls)
    ref_fields = [f for f in cls.__struct_fields__
                  if any(t in (ImageRef, ArrayRef) for t in (hints[f], *typing.get_args(hints[f])))]

    @settings(max_examples=10, deadline=None)
    @given(msg=_struct(cls), seed=st.integers(0, 2**32 - 1))
    def check(msg, seed):
        msg, blobs = _materialise(msg, np.random.default_rng(seed))
        for name in ref_fields:
            ref = getattr(msg, name)
            if ref is None:
                continue
            bad = msgspec.structs.replace(msg, **{name: msgspec.structs.replace(ref, blob=len(blobs))})
            with pytest.raises(BadBlob, match=name):
                codec.decode(codec.encode(bad, blobs))

    check()


def test_encode_refuses_a_blob_that_is_not_a_buffer():
    """On the caller's thread, before any part of the message reaches a socket."""
    msg = Frame(job_id="j", index=0, num_frames=1, pose=[0.0] * 16, K=[0.0] * 9,
                image=ImageRef(blob=0, codec="raw", width=1, height=1), fps=24.0)
    for bad in ("text", 3, object()):
        with pytest.raises(TypeError):
            codec.encode(msg, [bad])
    for good in (b"\x00" * 3, bytearray(3), memoryview(b"abc"), np.zeros(3, np.uint8)):
        assert codec.encode(msg, [good])[1] is good


def test_blobs_are_not_copied():
    a = np.arange(12, dtype=np.float32).reshape(4, 3)
    ref, buf = codec.array_blob(a, 0)
    frames = codec.encode(Frame(job_id="j", index=0, num_frames=1, pose=[0.0] * 16, K=[0.0] * 9,
                                image=ImageRef(blob=1, codec="raw", width=1, height=1), fps=24.0),
                          [buf, b"\x01\x02\x03"])
    assert frames[1] is buf  # encode hands the buffer through untouched
    raw = bytearray(buf.tobytes())
    _, blobs = codec.decode([frames[0], raw, b"\x01\x02\x03"])
    view = codec.read_array(ref, blobs)
    raw[0:4] = np.float32(42).tobytes()
    assert view[0, 0] == 42  # the array is a view on the received buffer


def test_raw_and_png_images_are_lossless_and_jpeg_close():
    yy, xx = np.mgrid[0:48, 0:64]
    img = np.stack([xx * 4, yy * 5, (xx + yy) * 2], axis=-1).astype(np.uint8)  # smooth, photo-like
    for name in ("raw", "png"):
        ref, data = codec.encode_image(img, name)
        assert np.array_equal(codec.decode_image(ref, [memoryview(data)]), img)
    ref, data = codec.encode_image(img, "jpeg", quality=95)
    out = codec.decode_image(ref, [memoryview(data)])
    assert np.abs(out.astype(int) - img).mean() < 3


def test_array_shape_must_match_bytes():
    ref = ArrayRef(blob=0, dtype="float32", shape=[10, 3])
    with pytest.raises(BadArray, match="needs 120 bytes"):
        codec.read_array(ref, [memoryview(b"\x00" * 100)])


def test_image_errors_are_named():
    with pytest.raises(BadImage):
        codec.encode_image(np.zeros((4, 4), np.uint8))
    ref = ImageRef(blob=0, codec="jpeg", width=4, height=4)
    with pytest.raises(BadImage, match="cannot"):
        codec.decode_image(ref, [memoryview(b"not a jpeg")])
    with pytest.raises(BadBlob):
        codec.decode_image(ref, [])


def test_points_per_chunk_limit():
    from protocol.limits import Limits

    n = 11
    xyz, rgb, rad = np.zeros((n, 3), np.float32), np.zeros((n, 3), np.uint8), np.zeros(n, np.float32)
    refs = [codec.array_blob(a, i) for i, a in enumerate((xyz, rgb, rad))]
    msg = PointsDelta(scene_id="s", chunk=0, last=True, xyz=refs[0][0], rgb=refs[1][0],
                      radius=refs[2][0], total_points=n)
    frames = codec.encode(msg, [r[1] for r in refs])
    codec.decode(frames)
    with pytest.raises(TooLarge, match="points in one chunk"):
        codec.decode(frames, Limits(max_points_per_chunk=10))


def test_image_headers_are_read_on_decode_unless_left_to_decode_image():
    """A Frame whose JPEG says 16x8 while its reference says 8x8: ``decode`` refuses it; with
    ``image_headers=False`` (the explorer's client) it passes, and ``decode_image`` refuses
    it before decoding a pixel."""
    from protocol.messages import Frame

    ref, data = codec.encode_image(np.zeros((8, 16, 3), np.uint8), "jpeg", 0)
    lying = ImageRef(blob=0, codec="jpeg", width=8, height=8)
    frames = codec.encode(Frame(job_id="j", index=0, num_frames=1, pose=np.eye(4).ravel().tolist(),
                                K=np.eye(3).ravel().tolist(), image=lying, fps=24.0), [data])
    with pytest.raises(BadImage, match="header says 16x8"):
        codec.decode(frames)
    msg, blobs = codec.decode(frames, image_headers=False)
    with pytest.raises(BadImage, match="header says 16x8"):
        codec.decode_image(msg.image, blobs)
    assert codec.decode(codec.encode(Frame(job_id="j", index=0, num_frames=1,
                                           pose=np.eye(4).ravel().tolist(),
                                           K=np.eye(3).ravel().tolist(), image=ref, fps=24.0),
                                     [data]))[0].image == ref
