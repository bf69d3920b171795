"""The local spool: every result is written here before it is sent, so nothing is lost on a crash or a
network loss. ``flush`` sends whatever is pending, step by step; each step carries its own idempotency key, kept
in the spool, so a step sent twice counts once on the server.

One folder per session: ``<data dir>/spool/<session_id>/entry.json`` plus its video files and start image (see
:func:`evaluator_client.config.default_data_dir`); the runner removes it once the session was sent. The entry is rewritten
atomically (temp file + rename) after every step.
"""

from __future__ import annotations

import json
import os
import shutil
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evaluator_client.api import ApiError, ArenaApi, ServerUnreachable

TRAJECTORY_TYPE = "application/vnd.apache.parquet"
# Server answers meaning the step's effect is already there (sent before, reply lost).
ALREADY_DONE = {"episode_exists"}
# Server answers meaning the session can no longer be completed; the entry is kept, marked failed.
SESSION_CLOSED = {
    "lease_expired",
    "session_expired",
    "session_aborted",
    "session_submitted",
    "session_not_found",
}


def new_key() -> str:
    return uuid.uuid4().hex


@dataclass
class FlushReport:
    sent: list[str]
    pending: list[str]
    failed: list[str]
    abandoned: list[str] = field(default_factory=list)


class Spool:
    """The spool under ``home`` (the client's data folder). ``keep_files``: keep each video after its upload
    (by default it is deleted once the server verified it)."""

    def __init__(self, home: Path, *, keep_files: bool = False) -> None:
        self.root = home / "spool"
        self.keep_files = keep_files
        self.root.mkdir(parents=True, exist_ok=True, mode=0o700)

    def folder(self, session_id: str) -> Path:
        path = self.root / session_id
        path.mkdir(exist_ok=True)
        return path

    def remove(self, session_id: str) -> None:
        """Delete the session's folder (its entry, recordings and start image): once it was sent."""
        shutil.rmtree(self.root / session_id, ignore_errors=True)

    def create(self, session: dict, *, scene: dict | None = None) -> dict:
        entry = {
            "session_id": session["id"],
            "task": session["task"],
            "robot": session["robot"],
            "scene": scene or {},
            "episodes": {},
            "videos": [],
            "trajectories": [],
            "preference": None,
            "abort": None,
            "status": "running",
            "error": None,
            "reveal": None,
        }
        self.save(entry)
        return entry

    def save(self, entry: dict) -> None:
        folder = self.folder(entry["session_id"])
        tmp = folder / "entry.json.tmp"
        with tmp.open("w") as fh:
            json.dump(entry, fh, indent=1)
            fh.flush()
            os.fsync(fh.fileno())
        os.replace(tmp, folder / "entry.json")

    def entries(self) -> Iterator[dict]:
        for path in sorted(self.root.glob("*/entry.json")):
            yield json.loads(path.read_text())

    def pending(self) -> list[dict]:
        return [e for e in self.entries() if e["status"] in ("running", "ready")]

    def add_episode(self, entry: dict, slot: str, episode: dict) -> None:
        entry["episodes"][slot] = {"body": episode, "idem": new_key(), "sent": False}
        self.save(entry)

    def add_video(
        self, entry: dict, *, slot: str, camera: str, path: Path, size: int, sha256: str, content_type: str
    ) -> None:
        kept = self.folder(entry["session_id"]) / f"{slot}-{camera}{path.suffix}"
        if path.resolve() != kept.resolve():
            shutil.move(str(path), kept)
        entry["videos"].append(
            {
                "slot": slot,
                "camera": camera,
                "file": kept.name,
                "size": size,
                "sha256": sha256,
                "content_type": content_type,
                "video_id": None,
                "uploaded": False,
                "finished": False,
                "idem_finish": new_key(),
            }
        )
        self.save(entry)

    def add_trajectory(self, entry: dict, *, slot: str, path: Path, size: int, sha256: str) -> None:
        """Keep one slot's trajectory file (Parquet) in the spool, to upload with the session's videos."""
        kept = self.folder(entry["session_id"]) / f"{slot}-trajectory.parquet"
        if path.resolve() != kept.resolve():
            shutil.move(str(path), kept)
        entry.setdefault("trajectories", []).append(
            {
                "slot": slot,
                "file": kept.name,
                "size": size,
                "sha256": sha256,
                "trajectory_id": None,
                "uploaded": False,
                "finished": False,
                "idem_finish": new_key(),
            }
        )
        self.save(entry)

    def set_preference(
        self, entry: dict, *, choice: str, reason: str, valid: bool, reason_public: bool | None = None
    ) -> None:
        """The verdict; ``reason_public`` None leaves whether the reason may be published to the lab's default."""
        body: dict = {"choice": choice, "reason": reason, "valid": valid}
        if reason_public is not None:
            body["reason_public"] = reason_public
        entry["preference"] = {
            "body": body,
            "idem": new_key(),
            "sent": False,
        }
        entry["status"] = "ready"
        self.save(entry)

    def set_abort(self, entry: dict, *, reason: str, fault: str) -> None:
        entry["abort"] = {"body": {"reason": reason, "fault": fault}, "idem": new_key(), "sent": False}
        entry["status"] = "ready"
        self.save(entry)

    def flush(
        self, api: ArenaApi, *, only: str | None = None, on_upload: Callable[[dict], None] | None = None
    ) -> FlushReport:
        """Send every ready entry (or just ``only``); an entry that meets a network failure stays for later.

        An entry still ``running`` has no verdict (its client stopped before the judge answered, or another
        ``arena-eval run`` is recording it): it stays pending while the server keeps the session open, and is
        marked ``abandoned`` once the server has closed the session (its lease expired), since nothing is left
        to send.
        """
        report = FlushReport(sent=[], pending=[], failed=[])
        for entry in self.entries():
            if only and entry["session_id"] != only:
                if entry["status"] in ("running", "ready"):
                    report.pending.append(entry["session_id"])
                continue
            if entry["status"] == "running":
                (report.abandoned if self._abandoned(api, entry) else report.pending).append(
                    entry["session_id"]
                )
                continue
            if entry["status"] != "ready":
                continue
            try:
                self._send(api, entry, on_upload)
            except ServerUnreachable as exc:
                entry["error"] = str(exc)
                self.save(entry)
                report.pending.append(entry["session_id"])
                continue
            except ApiError as exc:
                entry["status"] = "failed"
                entry["error"] = f"{exc.code}: {exc.message}"
                self.save(entry)
                report.failed.append(entry["session_id"])
                continue
            report.sent.append(entry["session_id"])
        return report

    def _abandoned(self, api: ArenaApi, entry: dict) -> bool:
        try:
            state = api.session(entry["session_id"])["state"]
        except (ServerUnreachable, ApiError):
            return False
        if state in ("assigned", "running"):
            return False
        entry["status"] = "abandoned"
        entry["error"] = f"the client stopped before the verdict; the server closed the session ({state})"
        self.save(entry)
        return True

    def push_episodes(self, api: ArenaApi, entry: dict) -> bool:
        """Send the episodes recorded so far (it renews the session's lease); True when all went through.

        A failure leaves them for :meth:`flush`, which reports it.
        """
        sid = entry["session_id"]
        try:
            for slot in sorted(entry["episodes"]):
                step = entry["episodes"][slot]
                self._step(
                    entry,
                    step,
                    lambda s, slot=slot: api.report_episode(sid, {**s["body"], "slot": slot}, idem=s["idem"]),
                )
        except (ServerUnreachable, ApiError):
            return False
        return True

    def _send(self, api: ArenaApi, entry: dict, on_upload: Callable[[dict], None] | None) -> None:
        sid = entry["session_id"]
        if entry["abort"] is not None:
            self._step(entry, entry["abort"], lambda s: api.abort(sid, **s["body"], idem=s["idem"]))
            entry["status"] = "aborted"
            self.save(entry)
            return
        for slot in sorted(entry["episodes"]):
            step = entry["episodes"][slot]
            self._step(
                entry,
                step,
                lambda s, slot=slot: api.report_episode(sid, {**s["body"], "slot": slot}, idem=s["idem"]),
            )
        for video in entry["videos"]:
            self._video(api, entry, video, on_upload)
        for trajectory in entry.get("trajectories", []):
            self._trajectory(api, entry, trajectory)
        reply = self._step(
            entry, entry["preference"], lambda s: api.submit_preference(sid, s["body"], idem=s["idem"])
        )
        if reply is not None:
            entry["reveal"] = reply.get("reveal")
        entry["status"] = "submitted"
        self.save(entry)

    def _step(self, entry: dict, step: dict, send: Callable[[dict], Any]) -> Any:
        if step["sent"]:
            return None
        try:
            reply = send(step)
        except ApiError as exc:
            if exc.code not in ALREADY_DONE:
                raise
            reply = None
        step["sent"] = True
        self.save(entry)
        return reply

    def _video(self, api: ArenaApi, entry: dict, video: dict, on_upload) -> None:
        if video["finished"]:
            return
        path = self.folder(entry["session_id"]) / video["file"]
        if not video["uploaded"]:
            declared = {k: video[k] for k in ("slot", "camera", "content_type", "size", "sha256")}
            # A fresh key each time: the server hands back a fresh URL for the same pending object.
            started = api.start_video(entry["session_id"], declared, idem=new_key())
            video["video_id"] = started["id"]
            self.save(entry)
            api.upload(started["upload"], path, video["content_type"])
            video["uploaded"] = True
            self.save(entry)
            if on_upload:
                on_upload(video)
        api.finish_video(video["video_id"], idem=video["idem_finish"])
        video["finished"] = True
        self.save(entry)
        if not self.keep_files:
            path.unlink(missing_ok=True)

    def _trajectory(self, api: ArenaApi, entry: dict, trajectory: dict) -> None:
        """Upload and verify one trajectory; each step is recorded, so a later flush resumes where it stopped."""
        if trajectory["finished"]:
            return
        path = self.folder(entry["session_id"]) / trajectory["file"]
        if not trajectory["uploaded"]:
            declared = {k: trajectory[k] for k in ("slot", "size", "sha256")}
            started = api.start_trajectory(entry["session_id"], declared, idem=new_key())
            trajectory["trajectory_id"] = started["id"]
            self.save(entry)
            api.upload(started["upload"], path, TRAJECTORY_TYPE)
            trajectory["uploaded"] = True
            self.save(entry)
        api.finish_trajectory(trajectory["trajectory_id"], idem=trajectory["idem_finish"])
        trajectory["finished"] = True
        self.save(entry)
        if not self.keep_files:
            path.unlink(missing_ok=True)
