"""The backend owns its sessions root and nothing else, on a real `dreamjourney serve`.

Roots that are not the backend's are refused before anything is touched; a root full of
tampered sessions (symbolic links, manifests naming paths outside their folder, broken or
non-finite manifests, a name that is not UTF-8, PLY headers that lie) starts, quarantines
what does not load (one log line each, nothing deleted), serves the good sessions, and
answers a lying cloud with a clean error. A decoy tree outside the root is hashed before and
after: not one byte of it changes. `dreamjourney sessions` lists the folder without a
traceback throughout.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from protocol.scripted import ScriptedClient, ScriptError
from protocol.trajectory import stock_path
from tests.helpers import scene
from tests.test_crash_sessions import free_port, server_config

EXE = str(Path(sys.executable).with_name("dreamjourney"))


def tree_hashes(root: Path) -> dict[str, str]:
    """Every entry under ``root`` (links not followed): path -> content hash or link target."""
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            path = Path(dirpath) / name
            rel = str(path.relative_to(root))
            if path.is_symlink():
                out[rel] = "link:" + os.readlink(path)
            elif path.is_file():
                out[rel] = hashlib.sha256(path.read_bytes()).hexdigest()
            else:
                out[rel] = "dir"
    return out


def make_decoy(where: Path) -> Path:
    """A small tree that looks worth deleting: a repository, a session-like folder with
    leftovers the backend would prune in its own root, a photo."""
    decoy = where / "decoy"
    (decoy / ".git" / "objects").mkdir(parents=True)
    (decoy / ".git" / "HEAD").write_text("ref: refs/heads/main\n")
    (decoy / ".git" / "objects" / "ab").write_bytes(os.urandom(64))
    look = decoy / "looks-like-a-session"
    (look / "clips").mkdir(parents=True)
    (look / "clips" / ".x.part.mp4").write_bytes(b"not the backend's")
    (look / "clips" / "0009.mp4").write_bytes(b"not the backend's either")
    (look / "cloud-feed.ply").write_bytes(b"ply\n")
    (look / "manifest.json").write_text("{not json")
    (decoy / "photo.jpg").write_bytes(os.urandom(256))
    return decoy


def refused(args: list[str], cwd: Path, env: dict | None = None) -> subprocess.Popen:
    return subprocess.Popen([EXE, "serve", "--bind", f"tcp://127.0.0.1:{free_port()}", *args],
                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True)


@pytest.mark.slow
def test_roots_that_are_not_the_backends_are_refused_untouched(tmp_path):
    work = tmp_path / "work"  # the current folder of the refused servers: a decoy itself
    work.mkdir()
    make_decoy(work)
    home = tmp_path / "home"
    make_decoy(home)
    foreign = tmp_path / "foreign"  # a folder with things in it and no marker
    make_decoy(foreign)
    config = tmp_path / "empty-sessions.toml"
    config.write_text('sessions = ""\n')
    before = {p: tree_hashes(p) for p in (work, home, foreign)}
    env = dict(os.environ, HOME=str(home))
    cases = {
        "empty": ["--sessions", ""],
        "config": ["--config", str(config)],
        "dot": ["--sessions", "."],
        "slash": ["--sessions", "/"],
        "home": ["--sessions", "~"],
        "above": ["--sessions", str(tmp_path)],  # holds the current folder
        "foreign": ["--sessions", str(foreign)],
    }
    procs = {name: refused(args, work, env) for name, args in cases.items()}  # side by side
    errors = {}
    for name, proc in procs.items():
        out, err = proc.communicate(timeout=600)
        lines = err.strip().splitlines()
        assert proc.returncode == 2, (name, out, err)
        assert len(lines) == 1 and lines[0].startswith("error: "), (name, err)
        assert "listening" not in out, name
        errors[name] = lines[0]
    assert "is empty" in errors["empty"] and "is empty" in errors["config"]
    assert "current folder" in errors["dot"] and "holds the" in errors["above"]
    assert "file system root" in errors["slash"] and "home folder" in errors["home"]
    assert "no .dreamjourney-sessions file" in errors["foreign"]
    assert {p: tree_hashes(p) for p in before} == before
    assert not (foreign / ".dreamjourney-sessions").exists()


def _start(root: Path, tmp_path: Path, log: Path) -> tuple[subprocess.Popen, str]:
    address = f"tcp://127.0.0.1:{free_port()}"
    proc = subprocess.Popen([EXE, "serve", "--bind", address, "--sessions", str(root),
                             "--config", str(server_config(tmp_path))],
                            stdout=subprocess.PIPE, stderr=log.open("a"), text=True)
    line = proc.stdout.readline()
    assert "listening" in line, (line, log.read_text()[-3000:])
    return proc, address


def _stop(proc: subprocess.Popen) -> None:
    proc.send_signal(signal.SIGTERM)
    proc.wait(timeout=60)


def _rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as f:
        return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmRSS:"))


def _sessions_listing(root: Path) -> subprocess.CompletedProcess:
    out = subprocess.run([sys.executable, "-m", "explorer.cli", "sessions", "--folder", str(root)],
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0 and "Traceback" not in out.stderr + out.stdout, out
    return out


def _edit(folder: Path, change) -> None:
    path = folder / "manifest.json"
    manifest = json.loads(path.read_text())
    change(manifest)
    path.write_text(json.dumps(manifest))  # NaN is written as NaN, as a careless tool would


BAD_MANIFESTS = {
    "clips-string": lambda m: m.update(clips="clips/0001.mp4"),
    "clips-null": lambda m: m.update(clips=None),
    "clip-without-file": lambda m: m["clips"].append({"kind": "transition", "num_frames": 3,
                                                      "fps": 24.0}),
    "nan-pose": lambda m: m["pose"][0].__setitem__(3, float("nan")),
    "cloud-dotdot": lambda m: m.update(cloud="../../decoy/photo.jpg"),
}


@pytest.mark.slow
def test_a_tampered_root_is_quarantined_and_the_good_sessions_served(tmp_path):
    root = tmp_path / "sessions"
    decoy = make_decoy(tmp_path)
    log = tmp_path / "serve.log"
    # 1. a real backend makes the sessions: two good ones and one per kind of tampering
    proc, address = _start(root, tmp_path, log)
    names = ["good", "plain", "bad-json", "json-list", "clips-link", "linked", "cloud-abs",
             "ply-huge", "ply-1e15", *BAD_MANIFESTS]
    folders = {}
    try:
        with ScriptedClient(address, timeout_s=600) as client:
            token = client.client.token
            for i, name in enumerate(names):
                opened = client.open_scene(scene(i, 48), scene_id=name)
                folders[name] = root / opened.scene.session
            poses = stock_path("forward", 4, 1.0)
            clip = client.transition("good", poses)
            assert clip.outcome.clip == f"{folders['good'].name}/clips/0001.mp4"
    finally:
        _stop(proc)
    # 2. tamper with them as a careless user or an attacker with the folder would
    (folders["bad-json"] / "manifest.json").write_text('{"version": 3, "scene_id": ')
    (folders["json-list"] / "manifest.json").write_text("[1, 2, 3]")
    shutil.rmtree(folders["clips-link"] / "clips", ignore_errors=True)
    (folders["clips-link"] / "clips").symlink_to(decoy / "looks-like-a-session" / "clips")
    moved = tmp_path / "moved-away"
    shutil.move(folders["linked"], moved)
    (root / folders["linked"].name).symlink_to(moved)  # the session folder is a link
    _edit(folders["cloud-abs"], lambda m: m.update(cloud=str(decoy / "photo.jpg")))
    for name, change in BAD_MANIFESTS.items():
        _edit(folders[name], change)
    for name, count in (("ply-huge", 100_000_000), ("ply-1e15", 10**15)):
        manifest = json.loads((folders[name] / "manifest.json").read_text())
        ply = folders[name] / manifest["cloud"]
        head, _, body = ply.read_bytes().partition(b"end_header\n")
        lines = [b"element vertex %d" % count if line.startswith(b"element vertex") else line
                 for line in head.split(b"\n")]
        ply.write_bytes(b"\n".join(lines) + b"end_header\n" + body)
    os.mkdir(os.fsencode(root) + b"/not-utf8-\xff\xfe")
    (root / "stray.txt").write_text("a file nobody made here")
    inside_quarantine = {n: sorted(p.name for p in folders[n].iterdir())
                         for n in ("bad-json", "clips-string")}
    decoy_before, moved_before = tree_hashes(decoy), tree_hashes(moved)
    listing = _sessions_listing(root)  # before recovery: every kind of damage on disk
    assert "good" in listing.stdout and "not readable sessions" in listing.stdout
    # 3. the backend starts, quarantines what does not load, serves the rest
    proc, address = _start(root, tmp_path, log)
    try:
        quarantine = root / ".quarantine"
        kept = sorted(p.name for p in root.iterdir() if not p.name.startswith("."))
        assert kept == sorted(folders[n].name for n in ("good", "plain", "ply-huge", "ply-1e15"))
        boxed = sorted(p.name for p in quarantine.iterdir())
        expected = len(names) - 4 + 2  # the tampered sessions, the non-UTF-8 folder, the file
        assert len(boxed) == expected, boxed
        text = log.read_text()
        assert text.count("does not load") == expected, text[-4000:]
        assert "Traceback" not in text
        for name, files in inside_quarantine.items():  # moved whole, nothing deleted
            (box,) = [p for p in quarantine.iterdir() if p.name.startswith(folders[name].name)]
            assert sorted(p.name for p in box.iterdir()) == files
        (link,) = [p for p in quarantine.iterdir() if p.name.startswith(folders["linked"].name)]
        assert link.is_symlink() and link.resolve() == moved.resolve()
        with ScriptedClient(address, token=token, timeout_s=600) as client:
            resumed = client.open_scene(None, scene_id="good", resume=True)
            assert resumed.scene.session == folders["good"].name and resumed.points.count() > 0
            client.open_scene(None, scene_id="plain", resume=True)
            more = client.transition("good", stock_path("forward", 3, 1.0, start=poses[-1]))
            assert more.outcome.clip == f"{folders['good'].name}/clips/0002.mp4"
            for name in ("bad-json", "nan-pose", "linked"):  # quarantined: as if never made
                with pytest.raises(ScriptError, match=r"\[unknown_scene\].*no saved session"):
                    client.open_scene(None, scene_id=name, resume=True)
            rss = _rss_mb(proc.pid)
            for name in ("ply-huge", "ply-1e15"):  # the header lies about the file's size
                with pytest.raises(ScriptError) as err:
                    client.open_scene(None, scene_id=name, resume=True)
                assert "[bad_value]" in str(err.value) and "cannot be loaded" in str(err.value)
                assert str(root) not in str(err.value) and "/" not in str(err.value)
            assert _rss_mb(proc.pid) - rss < 100  # refused before reading
            assert proc.poll() is None
    finally:
        _stop(proc)
    _sessions_listing(root)
    assert tree_hashes(decoy) == decoy_before
    assert tree_hashes(moved) == moved_before
