"""Stream 1280x720 JPEG frames over loopback: our transport (credits) against bare pyzmq.

Prints one JSON object as its last line: frames_per_s, mb_per_s, p50_ms, p99_ms (per-frame
latency, from the producer's send to the explorer's receive) and throughput_vs_bare_zmq.
"""

from __future__ import annotations

import argparse
import json
import sys
import threading
import time
from pathlib import Path

import numpy as np
import zmq
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from protocol import codec  # noqa: E402
from protocol.messages import Frame, JobDone, Transition  # noqa: E402
from protocol.transport import Client, Incoming, ServerEndpoint  # noqa: E402

SCENES = Path(__file__).resolve().parents[2] / "shared" / "scenes"


def make_blobs(count: int) -> list[bytes]:
    """JPEGs at 1280x720 from the shared scenes (or gradients if they are missing)."""
    images = []
    for path in sorted(SCENES.glob("*.jpg")):
        with Image.open(path) as im:
            images.append(np.asarray(im.convert("RGB").resize((1280, 720), Image.BILINEAR)))
    if not images:
        yy, xx = np.mgrid[0:720, 0:1280]
        images = [np.stack([xx % 256, yy % 256, (xx + yy) % 256], -1).astype(np.uint8)]
    encoded = [codec.encode_image(img, "jpeg", index=0, quality=90)[1] for img in images]
    return [encoded[i % len(encoded)] for i in range(count)]


def frame_header(i: int, n: int, ref) -> Frame:
    return Frame(job_id="bench", index=i, num_frames=n, pose=np.eye(4).ravel().tolist(),
                 K=[900.0, 0, 640, 0, 900.0, 360, 0, 0, 1], image=ref, fps=24.0)


def run_transport(blobs: list[bytes], credits: int) -> dict:
    n = len(blobs)
    server = ServerEndpoint("tcp://127.0.0.1:0")
    client = Client(server.address, credits=credits)
    client.connect(timeout=5)
    poses = np.tile(np.eye(4, dtype=np.float32), (2, 1, 1))
    ref, buf = codec.array_blob(poses, 0)
    client.send(Transition(job_id="bench", scene_id="s", poses=ref), [buf])
    peer = server.poll(timeout=5).peer
    sent_at = np.zeros(n)
    recv_at = np.zeros(n)
    nbytes = 0
    grant = max(1, credits // 4)

    def produce() -> None:
        img_ref = codec.ImageRef(blob=0, codec="jpeg", width=1280, height=720)
        for i, blob in enumerate(blobs):
            server.wait_writable(peer, max_pending=4)  # what a job thread does: no pile-up
            sent_at[i] = time.perf_counter()
            server.send(peer, frame_header(i, n, img_ref), [blob])
        server.send(peer, JobDone(job_id="bench", num_frames=n))

    start = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    received = 0
    while True:
        ev = client.poll(timeout=10)
        if not isinstance(ev, Incoming):
            raise RuntimeError(f"stream stalled after {received} frames: {ev}")
        if isinstance(ev.msg, JobDone):
            break
        recv_at[ev.msg.index] = time.perf_counter()
        nbytes += ev.blobs[0].nbytes
        received += 1
        if received % grant == 0:  # consumed: grant credit back in small batches
            client.credit(grant)
    elapsed = time.perf_counter() - start
    producer.join()
    client.close()
    server.close()
    assert received == n, f"received {received} of {n} frames"
    lat_ms = (recv_at - sent_at) * 1000
    return {"elapsed": elapsed, "bytes": nbytes, "p50": float(np.percentile(lat_ms, 50)),
            "p99": float(np.percentile(lat_ms, 99))}


def run_bare(blobs: list[bytes]) -> dict:
    ctx = zmq.Context()
    router = ctx.socket(zmq.ROUTER)
    # At the high-water mark a ROUTER drops messages unless it is mandatory (then send waits):
    # without this, past ~1000 frames in flight frames (and "done") were dropped and the
    # reader hung. Every frame arrives, as with our transport.
    router.setsockopt(zmq.ROUTER_MANDATORY, 1)
    port = router.bind_to_random_port("tcp://127.0.0.1")
    dealer = ctx.socket(zmq.DEALER)
    dealer.connect(f"tcp://127.0.0.1:{port}")
    dealer.send(b"hi")
    peer, _ = router.recv_multipart()
    header = codec.encode(frame_header(0, len(blobs), codec.ImageRef(blob=0, codec="jpeg",
                                                                      width=1280, height=720)))[0]

    def produce() -> None:
        for blob in blobs:
            router.send_multipart([peer, header, blob], copy=False)
        router.send_multipart([peer, b"done"])

    start = time.perf_counter()
    producer = threading.Thread(target=produce)
    producer.start()
    nbytes = received = 0
    while True:
        frames = dealer.recv_multipart(copy=False)
        if len(frames) == 1:
            break
        nbytes += len(frames[1].buffer)
        received += 1
    elapsed = time.perf_counter() - start
    producer.join()
    router.close(linger=0)
    dealer.close(linger=0)
    ctx.term()
    assert received == len(blobs), f"bare: received {received} of {len(blobs)} frames"
    return {"elapsed": elapsed, "bytes": nbytes}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--frames", type=int, default=2000,
                        help="frames a round (500 made a round of ~50 ms: too short to be steady)")
    parser.add_argument("--credits", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds; best of each kept")
    args = parser.parse_args()
    blobs = make_blobs(args.frames)
    ours, bare = [], []
    for _ in range(args.rounds):  # interleaved, so drift on a shared machine hits both alike
        ours.append(run_transport(blobs, args.credits))
        bare.append(run_bare(blobs))
    best = min(ours, key=lambda r: r["elapsed"])
    best_bare = min(bare, key=lambda r: r["elapsed"])
    result = {
        "frames": args.frames,
        "frame_kb": round(float(np.mean([len(b) for b in blobs])) / 1024, 1),
        "credits": args.credits,
        "frames_per_s": round(args.frames / best["elapsed"], 1),
        "mb_per_s": round(best["bytes"] / best["elapsed"] / 1e6, 1),
        "p50_ms": round(float(np.median([r["p50"] for r in ours])), 3),
        "p99_ms": round(float(np.median([r["p99"] for r in ours])), 3),
        "bare_frames_per_s": round(args.frames / best_bare["elapsed"], 1),
        "throughput_vs_bare_zmq": round(best_bare["elapsed"] / best["elapsed"], 3),
    }
    print(json.dumps(result))


if __name__ == "__main__":
    main()
