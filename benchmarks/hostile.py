"""The canary's request latency with hostile clients running against `dreamjourney serve`,
side by side with the canary alone, in one run.

The backend runs as its own process (as deployed). The canary flies short transitions
(64x64, 4 frames) and times each request. Phases alternate in rounds: alone, then one kind
of attack, alone, the next kind, ..., so a shared machine's drift hits all alike. The kinds:

- ``flood`` (the old attackers, together): processes send refused messages of every kind
  (bit flips and splices of every message type, invalid UTF-8, deep nesting, image bombs,
  oversized multiparts, non-finite numbers, wrong tuple lengths, ...) as fast as the
  backend answers them (senders) or at a fixed rate without reading answers (sprayers),
  each reconnecting at once when shut out; a client never grants frame credit, a client
  floods valid transitions (each round in a new scene, its clips saved), and 500
  connections stay silent;
- ``slow_reader``: a client granting one frame of credit every 4 s on the longest clip the
  backend allows, over and over;
- ``slot_holders``: a process taking every client slot with new identities that only
  ping (reconnecting as new identities when evicted); meanwhile the canary's owner comes
  back on a second connection and a newcomer connects, once a round each;
- ``huge_job``: a client running the largest job the caps allow (a dynamics clip of the
  largest image and the most frames), over and over, crediting every frame.

Prints one JSON object as its last line: canary p50/p99 alone and under each kind,
``canary_p99_ratio`` (the worst kind; goal <= 1.5), ``rss_growth_mb`` of the backend
process (goal <= 200), the disk each identity's sessions grew by against its quota
(``disk_growth_mb_max_identity`` <= ``disk_quota_mb``), whether the returning owner and the
newcomers got in while the slots were held, and how many hostile messages were answered
with an Error or dropped.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing as mp
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

CONFIG = """
bind = "{bind}"
sessions = "{sessions}"
heartbeat_s = 0.5
peer_timeout_s = 20.0
[scheduler]
job_slots = 2
open_slots = 2
credit_timeout_s = 5.0
slice_s = 0.05
[connections]
hello_timeout_s = 1.5
[limits]
max_message_mb = 0.5
max_image_pixels = 262144
max_frames = 64
max_job_pixel_frames = 16777216  # 512 x 512 x 64: the huge job is exactly legal
[quotas]
disk_mb_per_client = {quota_mb}
resident_scenes_per_client = 2
resident_scenes_total = 8
min_free_disk_mb = 64
[engines.classic]
depth_model = "none"
"""
QUOTA_MB = 24.0
HUGE = 512
"""Side of the huge job's image (max_image_pixels); its clip has max_frames frames."""


def rss_mb(pid: int) -> float:
    """Resident memory of ``pid`` and its children (the backend and its network endpoint)."""
    total = 0.0
    children = subprocess.run(["pgrep", "-P", str(pid)], capture_output=True, text=True).stdout
    for p in [pid, *map(int, children.split())]:
        try:
            with open(f"/proc/{p}/status") as f:
                total += next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))
        except (OSError, StopIteration):
            pass
    return total


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


# -- hostile processes --------------------------------------------------------------------


def hostile_batch(seed: int) -> list:
    """4000 refused messages of every kind (as ``HostileMessages.batch`` makes them)."""
    from protocol.hostile import HostileMessages
    from protocol.limits import Limits

    return HostileMessages(Limits(max_message_bytes=512 << 10, max_image_pixels=262144),
                           seed=seed).batch(4000)


def connect(ctx, address: str):
    """A DEALER that said Hello and was welcomed, or None (refused or timed out)."""
    import zmq

    from tests.helpers import raw_dealer

    try:
        return raw_dealer(ctx, address)
    except (AssertionError, zmq.Again):
        return None


def hostile_sender(address: str, seed: int, stop, active, sent, dropped) -> None:
    """Refused messages in batches of 200, as fast as answered; reconnects when shut out."""
    import zmq

    from protocol.messages import Error
    from tests.helpers import next_msg

    batch = hostile_batch(seed)
    ctx = zmq.Context()
    sock, i = None, 0
    while not stop.is_set():
        if not active.wait(0.1):
            continue
        if sock is None:
            if (sock := connect(ctx, address)) is None:
                continue
            sock.setsockopt(zmq.RCVTIMEO, 1000)
        chunk = [batch[(i + k) % len(batch)][1] for k in range(200)]
        i += 200
        for frames in chunk:
            sock.send_multipart(frames, copy=False)
        got = 0
        try:
            while got < len(chunk):
                msg = next_msg(sock)
                got += 1
                if isinstance(msg, Error) and "per second" in msg.message:
                    raise zmq.Again()  # shut out: the rest of the batch is dropped
        except zmq.Again:
            sock.close()
            sock = None
            with dropped.get_lock():
                dropped.value += len(chunk) - got
        with sent.get_lock():
            sent.value += got
    if sock is not None:
        sock.close()
    ctx.term()


def hostile_sprayer(address: str, seed: int, rate: float, stop, active, sprayed) -> None:
    """Refused messages at ``rate`` per second without waiting for answers (open loop); reads
    what comes back only to notice a shut-out, then reconnects at once."""
    import zmq

    from protocol import codec
    from protocol.messages import Error

    batch = hostile_batch(seed)
    ctx = zmq.Context()
    sock, i, t_next = None, 0, time.monotonic()
    while not stop.is_set():
        if not active.wait(0.1):
            continue
        if sock is None:
            if (sock := connect(ctx, address)) is None:
                continue
            sock.setsockopt(zmq.SNDTIMEO, 0)
        t_next = max(t_next + 0.01, time.monotonic() - 0.1)
        time.sleep(max(0.0, t_next - time.monotonic()))
        shut, n = False, 0
        for _ in range(int(rate * 0.01)):  # one 10 ms slice of the rate
            try:
                sock.send_multipart(batch[i % len(batch)][1], copy=False)
                n += 1
            except zmq.Again:
                break
            i += 1
        while not shut:
            try:
                msg, _ = codec.decode(sock.recv_multipart(zmq.NOBLOCK))
            except zmq.Again:
                break
            except Exception:
                continue
            shut = isinstance(msg, Error) and "per second" in msg.message
        with sprayed.get_lock():
            sprayed.value += n
        if shut:
            sock.close()
            sock = None
    if sock is not None:
        sock.close()
    ctx.term()


def slow_reader(address: str, stop, active) -> None:
    """The longest clip allowed, granting one frame of credit every 4 s; again when it ends."""
    from protocol import requests
    from protocol.messages import JobDone, JobFailed
    from protocol.scripted import ScriptedClient
    from protocol.trajectory import stock_path
    from tests.helpers import scene

    n = 0
    while not stop.is_set():
        if not active.wait(0.1):
            continue
        with ScriptedClient(address, credits=1) as client:
            opened = client.open_scene(scene(7, 128), scene_id=f"slow{n}")
            poses = stock_path("forward", 64, opened.scene.median_depth)
            client.client.send(*requests.transition(f"slow{n}", f"slow{n}", poses))
            next_credit = time.monotonic() + 4.0
            while active.is_set() and not stop.is_set():
                ev = client.client.poll(timeout=max(0.0, min(0.5, next_credit - time.monotonic())))
                if ev is not None and isinstance(ev.msg, (JobDone, JobFailed)):
                    break
                if time.monotonic() >= next_credit:  # a frame read every 4 s, never sooner
                    client.client.credit(1)
                    next_credit += 4.0
        n += 1


def huge_job(address: str, stop, active, frames, started) -> None:
    """The largest job the caps allow, every frame credited, over and over; cancelled when
    its phase ends. Each phase connects anew and opens its scene (a connection idle between
    phases is the one the slot holders evict); ``started`` is set once its first job of the
    phase runs."""
    import numpy as np

    from protocol import requests
    from protocol.events import PeerGone
    from protocol.messages import Cancel, Frame, JobDone, JobFailed
    from protocol.scripted import ScriptedClient
    from tests.helpers import scene

    n = 0
    while not stop.is_set():
        if not active.wait(0.1):
            continue
        with ScriptedClient(address, credits=64, timeout_s=600) as client:
            client.open_scene(scene(8, HUGE), scene_id="huge")
            while active.is_set() and not stop.is_set():
                n += 1
                client.client.send(*requests.dynamics(f"h{n}", "huge", np.eye(4), num_frames=64))
                cancelled = False
                while True:
                    ev = client.client.poll(timeout=0.2)
                    if not cancelled and (stop.is_set() or not active.is_set()):
                        client.client.send(Cancel(job_id=f"h{n}"))
                        cancelled = True
                    if ev is None:
                        continue
                    if isinstance(ev, PeerGone):
                        print(f"huge job's connection lost: {ev.reason}", file=sys.stderr)
                        return
                    if isinstance(ev.msg, Frame):
                        started.set()
                        client.client.credit(1)
                        with frames.get_lock():
                            frames.value += 1
                    elif isinstance(ev.msg, (JobDone, JobFailed)) and ev.msg.job_id == f"h{n}":
                        break


def slot_holders(address: str, stop, active, held) -> None:
    """New identities taking every client slot, pinging and nothing else; each evicted one
    comes back as a new identity (a newcomer's Hello, at the admission rate)."""
    import zmq

    from protocol import codec
    from protocol.messages import PROTOCOL_VERSION, Error, Hello, Ping, Welcome

    ctx = zmq.Context()
    socks: list = []
    welcomed: set = set()
    while not stop.is_set():
        if not active.wait(0.1):
            for s in socks:
                s.close(linger=0)
            socks, welcomed = [], set()
            continue
        while len(socks) < 100:
            s = ctx.socket(zmq.DEALER)
            s.setsockopt(zmq.LINGER, 0)
            s.connect(address)
            s.send_multipart(codec.encode(Hello(protocol_version=PROTOCOL_VERSION)))
            socks.append(s)
        alive = []
        for s in socks:
            gone = False
            while s.poll(0):
                msg, _ = codec.decode(s.recv_multipart())
                if isinstance(msg, Welcome):
                    welcomed.add(s)
                gone |= isinstance(msg, Error)
            if gone:
                welcomed.discard(s)
                s.close(linger=0)
            else:
                s.send_multipart(codec.encode(Ping(seq=0, sent_at=0.0)))
                alive.append(s)
        socks = alive
        with held.get_lock():
            held.value = max(held.value, len(welcomed))
        time.sleep(0.25)
    for s in socks:
        s.close(linger=0)
    ctx.term()


def nuisances(address: str, stop, active) -> None:
    """500 silent connections, and in each attack round a never-crediting client and a client
    flooding 300 valid transitions."""
    import threading

    from tests.attackers import flooder, never_credits, silent_connections

    silent, ctx, dealers = silent_connections(address)
    n = 0
    while not stop.is_set():  # one of each per attack round
        if not active.wait(0.1):
            continue
        threads = [threading.Thread(target=never_credits, args=(address, {}), kwargs={"scene_id": f"st{n}"}),
                   threading.Thread(target=flooder, args=(address, {}), kwargs={"scene_id": f"fl{n}"})]
        n += 1
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        while active.is_set() and not stop.is_set():
            time.sleep(0.05)
    for s in silent:
        s.close()
    for d in dealers:
        d.close()
    ctx.term()


# -- canary -------------------------------------------------------------------------------


def canary_latencies(client, poses, count: int) -> list[float]:
    from protocol.messages import JobDone

    out = []
    for _ in range(count):
        t0 = time.perf_counter()
        job = client.transition("canary", poses)
        assert isinstance(job.outcome, JobDone), job.outcome
        out.append(time.perf_counter() - t0)
    return out


def comes_back(address: str, token: str) -> dict:
    """The canary's owner on a second connection resuming its other scene, and a newcomer."""
    from protocol.scripted import ScriptedClient, ScriptError

    out = {"owner": False, "newcomer": False}
    try:
        with ScriptedClient(address, token=token, timeout_s=30) as owner:
            out["owner"] = owner.open_scene(None, scene_id="home", resume=True).scene.resumed
    except (ScriptError, TimeoutError, ConnectionError) as exc:
        print(f"owner refused: {exc}", file=sys.stderr)
    try:
        with ScriptedClient(address, timeout_s=30) as newcomer:
            out["newcomer"] = bool(newcomer.welcome.token)
    except (ScriptError, TimeoutError, ConnectionError) as exc:
        print(f"newcomer refused: {exc}", file=sys.stderr)
    return out


def disk_by_identity(root: Path) -> dict[str, float]:
    """MB of sessions per owner identity (from their manifests)."""
    from backend.session import folder_bytes

    out: dict[str, float] = {}
    for folder in root.iterdir():
        if folder.name.startswith(".") or not (folder / "manifest.json").is_file():
            continue
        owner = json.loads((folder / "manifest.json").read_text()).get("owner", "")
        out[owner] = out.get(owner, 0.0) + folder_bytes(folder) / (1 << 20)
    return out


KINDS = ("flood", "slow_reader", "slot_holders", "huge_job")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--requests", type=int, default=240, help="canary requests per phase")
    parser.add_argument("--senders", type=int, default=2, help="hostile sender processes")
    parser.add_argument("--sprayers", type=int, default=1, help="open-loop hostile processes")
    parser.add_argument("--spray-rate", type=float, default=5000.0, help="messages/s per sprayer")
    parser.add_argument("--rounds", type=int, default=4, help="rounds of alone/attacked phases")
    parser.add_argument("--kinds", default=",".join(KINDS),
                        help=f"comma-separated attack kinds to run (of {', '.join(KINDS)})")
    args = parser.parse_args()
    kinds = tuple(args.kinds.split(","))
    if not kinds or not set(kinds) <= set(KINDS):
        parser.error(f"--kinds: choose from {', '.join(KINDS)}")
    from protocol.scripted import ScriptedClient
    from protocol.trajectory import stock_path
    from tests.helpers import scene

    tmp = Path(tempfile.mkdtemp(prefix="dj-hostile-"))
    address = f"tcp://127.0.0.1:{free_port()}"
    sessions = tmp / "sessions"
    (tmp / "backend.toml").write_text(CONFIG.format(bind=address, sessions=sessions,
                                                    quota_mb=QUOTA_MB))
    exe = Path(sys.executable).with_name("dreamjourney")
    server = subprocess.Popen([str(exe), "serve", "--config", str(tmp / "backend.toml")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    assert "listening" in server.stdout.readline()
    fork = mp.get_context("fork")
    latencies: dict[str, list[float]] = {"alone": [], **{k: [] for k in kinds}}
    back = {"owner": 0, "newcomer": 0, "tries": 0}
    try:
        stop = fork.Event()
        active = {k: fork.Event() for k in KINDS}
        sent, dropped, sprayed, held, huge = (fork.Value("q", 0) for _ in range(5))
        huge_started = fork.Event()
        flood = active["flood"]
        procs = [fork.Process(target=hostile_sender, args=(address, s, stop, flood, sent, dropped))
                 for s in range(args.senders)]
        procs += [fork.Process(target=hostile_sprayer,
                               args=(address, 100 + s, args.spray_rate, stop, flood, sprayed))
                  for s in range(args.sprayers)]
        procs += [fork.Process(target=nuisances, args=(address, stop, flood)),
                  fork.Process(target=slow_reader, args=(address, stop, active["slow_reader"])),
                  fork.Process(target=slot_holders,
                               args=(address, stop, active["slot_holders"], held)),
                  fork.Process(target=huge_job,
                               args=(address, stop, active["huge_job"], huge, huge_started))]
        for p in procs:  # started before any client thread exists here (fork)
            p.start()
        with ScriptedClient(address, credits=8) as client:
            opened = client.open_scene(scene(1), scene_id="canary")
            client.open_scene(scene(2), scene_id="home")  # resumed by comes_back
            poses = stock_path("forward", 4, opened.scene.median_depth)
            canary_latencies(client, poses, 10)  # warm up
            rss0, peak = rss_mb(server.pid), 0.0
            per_round = max(1, args.requests // args.rounds)
            for _ in range(args.rounds):
                for kind in kinds:
                    latencies["alone"] += canary_latencies(client, poses, per_round // len(kinds) + 1)
                    active[kind].set()
                    time.sleep(1.5)  # the attack is in full swing
                    if kind == "huge_job":  # its scene is open and its job streams frames
                        assert huge_started.wait(120), "the huge job did not start"
                    for i in range(per_round):
                        latencies[kind] += canary_latencies(client, poses, 1)
                        peak = max(peak, rss_mb(server.pid))
                        if kind == "slot_holders" and i == per_round // 2:
                            got = comes_back(address, client.client.token)
                            back["tries"] += 1
                            back["owner"] += got["owner"]
                            back["newcomer"] += got["newcomer"]
                    active[kind].clear()
                    huge_started.clear()
                    time.sleep(1.0)  # the attack's last batches drain
            stop.set()
            for p in procs:
                p.join(timeout=60)
                if p.is_alive():
                    p.kill()
            alive = server.poll() is None
    finally:
        stop.set()
        server.terminate()
        server.wait(timeout=30)
    p50a, p99a = np.percentile(latencies["alone"], [50, 99]) * 1e3
    result = {"canary_requests_alone": len(latencies["alone"]),
              "canary_p50_ms_alone": round(float(p50a), 2),
              "canary_p99_ms_alone": round(float(p99a), 2)}
    ratios = {}
    for kind in kinds:
        p50, p99 = np.percentile(latencies[kind], [50, 99]) * 1e3
        result[f"canary_p50_ms_{kind}"] = round(float(p50), 2)
        result[f"canary_p99_ms_{kind}"] = round(float(p99), 2)
        ratios[kind] = round(float(p99 / p99a), 3)
        result[f"canary_p99_ratio_{kind}"] = ratios[kind]
    disk = disk_by_identity(sessions)
    result.update({
        "hostile_messages_answered": int(sent.value),
        "hostile_messages_dropped": int(dropped.value),
        "sprayed_messages": int(sprayed.value),
        "slots_taken_by_holders": int(held.value),
        "huge_job_frames": int(huge.value),
        "owner_admitted": f"{back['owner']}/{back['tries']}",
        "newcomer_admitted": f"{back['newcomer']}/{back['tries']}",
        "backend_alive": alive,
        "cpu_cores": os.cpu_count(),
        "disk_identities": len(disk),
        "disk_growth_mb_max_identity": round(max(disk.values(), default=0.0), 2),
        "disk_quota_mb": QUOTA_MB,
        "canary_p99_ratio": max(ratios.values()),
        "rss_growth_mb": round(max(peak - rss0, 0.0), 1),
    })
    print(json.dumps(result))


if __name__ == "__main__":
    main()
