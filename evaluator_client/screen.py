"""The operator screen: a local web page for the person at the robot, served by ``arena-eval run``.

Before each slot it shows the start image to restore the scene ("Scene ready" / "Not ready yet", which only
asks again); during each episode the live camera views (the latest JPEG of each camera, polled) and the step
counter, with Stop (end this episode early) and Abort (end the session); after both episodes the rating form
(progress of A and B, 0-100; A / B / tie; the reason; whether the session is valid); after submitting, the
reveal, until "Next session" (or "Finish").

Only the standard library (:mod:`http.server` in a daemon thread) plus numpy and PyAV for the images. The page
is self-contained (inline CSS and JS under a per-run nonce, no external resource). It listens on 127.0.0.1 by
default; every path holds a random token (other local users and other pages cannot guess it), the Host header
must name this server (no DNS rebinding), a POST must carry the token in ``X-Arena-Token`` too (a header no
cross-origin form can set without a preflight, which this server never allows) with a same-origin ``Origin``
when there is one, and request bodies are bounded (:data:`MAX_BODY_BYTES`).

:class:`OperatorScreen` is a :class:`~evaluator_client.judge.Judge`: the runner thread calls it and blocks in it
while it waits for the operator's answer; the HTTP thread only records answers and serves the current state.
"""

from __future__ import annotations

import hmac
import json
import secrets
import threading
from collections.abc import Mapping
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

if TYPE_CHECKING:  # the command line imports this module; numpy and PyAV load only once a screen runs
    import numpy as np

    from evaluator_client.episode import EpisodeResult

MAX_BODY_BYTES = 16 * 1024
MAX_REASON_CHARS = 5000
FAULTS = ("operator", "robot")
"""Whom an operator's abort may blame (the screen never lets the operator name a policy)."""


class ScreenError(Exception):
    """The screen cannot be served (e.g. its port is taken); the message says what to do."""


class OperatorScreen:
    """Serve the operator screen on ``host:port`` (0: a free port) and judge through it.

    ``sessions``: how many sessions this run holds (for the page's counter). Call :meth:`close` at the end.
    """

    def __init__(self, *, host: str = "127.0.0.1", port: int = 0, sessions: int = 1) -> None:
        self.token = secrets.token_urlsafe(24)
        self.nonce = secrets.token_urlsafe(16)
        self._cond = threading.Condition()
        self._state: dict[str, Any] = {
            "phase": "starting",
            "session_no": 0,
            "sessions": sessions,
            "session": "",
            "task": "",
            "slot": "",
            "step": 0,
            "max_steps": 0,
            "cameras": [],
            "frame_seq": 0,
            "start_seq": 0,
            "start_path": "",
            "message": "",
            "results": {},
            "reveal": None,
            "outcome": "",
        }
        self._answer: dict[str, Any] | None = None
        self._stop = False
        self._abort: tuple[str, str] | None = None
        self._rating: dict[str, Any] | None = None
        self._frames: dict[str, np.ndarray] = {}
        self._jpegs: dict[str, tuple[int, bytes]] = {}
        self._start_png = b""
        try:
            self._server = ThreadingHTTPServer((host, port), _handler_for(self))
        except (OSError, OverflowError) as exc:  # OverflowError: a port outside 0-65535
            raise ScreenError(
                f"the operator screen cannot listen on {host}:{port} ({getattr(exc, 'strerror', None) or exc}): "
                "pick another --ui-port, or leave it out for a free one"
            ) from exc
        self._server.daemon_threads = True
        self.host, self.port = self._server.server_address[:2]
        self._thread = threading.Thread(
            target=self._server.serve_forever, name="operator-screen", daemon=True
        )
        self._thread.start()

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in str(self.host) else self.host
        return f"http://{host}:{self.port}/{self.token}/"

    def close(self) -> None:
        with self._cond:
            self._state["phase"] = "closed"
            self._cond.notify_all()
        self._server.shutdown()
        self._server.server_close()

    # -- the runner's side (the Judge protocol) -------------------------------------------------------------

    def session_started(self, session_id: str, task: str) -> None:
        with self._cond:
            self._state.update(
                phase="starting",
                session_no=self._state["session_no"] + 1,
                session=session_id[:8],
                task=task,
                slot="",
                results={},
                reveal=None,
                outcome="",
                message="",
            )
            self._stop, self._abort, self._rating = False, None, None

    def confirm_start(self, image: np.ndarray, *, slot: str, image_path: Path | None = None) -> bool:
        """Show the start image and wait: True on "Scene ready", False on "Abort" ("Not ready" asks again)."""
        from evaluator_client.video import png_bytes

        png = png_bytes(image)
        with self._cond:
            self._start_png = png
            self._state.update(
                slot=slot,
                start_seq=self._state["start_seq"] + 1,
                start_path=str(image_path or ""),
                message="",
            )
        answer = self._wait("scene")
        return answer["action"] == "scene_ready"

    def episode_started(self, slot: str, max_steps: int, cameras: list[str]) -> None:
        with self._cond:
            self._frames, self._jpegs = {}, {}
            self._stop = False
            self._state.update(
                phase="episode", slot=slot, step=0, max_steps=max_steps, cameras=list(cameras), message=""
            )

    def show_step(self, step: int) -> None:
        with self._cond:
            self._state["step"] = step

    def show_frames(self, frames: Mapping[str, np.ndarray]) -> None:
        with self._cond:
            self._frames = {
                name: image.copy() for name, image in frames.items()
            }  # the robot may reuse buffers
            self._state["frame_seq"] += 1

    def should_stop(self) -> bool:
        with self._cond:
            return self._stop or self._abort is not None

    def abort_requested(self) -> tuple[str, str] | None:
        with self._cond:
            return self._abort

    def episode_finished(self, slot: str, result: EpisodeResult) -> None:
        with self._cond:
            self._state["results"][slot] = {"steps": result.steps, "stop_reason": result.stop_reason}
            self._state["phase"] = "between"

    def progress(self, slot: str, result: EpisodeResult) -> int:
        return int(self._rate()[f"progress_{slot.lower()}"])

    def preference(self, a_result: EpisodeResult, b_result: EpisodeResult) -> tuple[str, str, bool]:
        rating = self._rate()
        with self._cond:
            self._state["phase"] = "sending"
        return str(rating["choice"]), str(rating["reason"]), bool(rating["valid"])

    def session_finished(self, outcome: Any) -> None:
        """Show how the session ended (the reveal after a submit) and wait for "Next session" / "Finish"."""
        reveal = getattr(outcome, "reveal", None)
        with self._cond:
            self._state.update(
                reveal=_public_reveal(reveal),
                outcome=str(getattr(outcome, "status", "")),
                message=str(getattr(outcome, "message", ""))[:300],
            )
        self._wait("reveal")

    # -- waiting for the operator -----------------------------------------------------------------------------

    def _rate(self) -> dict[str, Any]:
        if self._rating is None:
            self._rating = self._wait("rate")
        return self._rating

    def _wait(self, phase: str) -> dict[str, Any]:
        with self._cond:
            self._answer = None
            self._state["phase"] = phase
            while self._answer is None:
                if self._state["phase"] == "closed":
                    raise RuntimeError("the operator screen was closed")
                self._cond.wait(0.5)
            answer, self._answer = self._answer, None
            return answer

    # -- the HTTP side -----------------------------------------------------------------------------------------

    def _snapshot(self) -> dict[str, Any]:
        with self._cond:
            return json.loads(json.dumps(self._state))

    def _frame_jpeg(self, camera: str) -> bytes | None:
        with self._cond:
            image = self._frames.get(camera)
            seq = self._state["frame_seq"]
            cached = self._jpegs.get(camera)
        if image is None:
            return None
        if cached is not None and cached[0] == seq:
            return cached[1]
        from evaluator_client.video import jpeg_bytes

        data = jpeg_bytes(image)
        with self._cond:
            self._jpegs[camera] = (seq, data)
        return data

    def _receive(self, body: Any) -> tuple[HTTPStatus, dict[str, Any]]:
        """Record one answer from the page; ``(status, reply)``."""
        if not isinstance(body, dict) or not isinstance(body.get("action"), str):
            return _refusal(HTTPStatus.BAD_REQUEST, "invalid", "action", "send a JSON object with an action")
        action = body["action"]
        with self._cond:
            phase = self._state["phase"]
            allowed = {
                "scene": {"scene_ready", "scene_not_ready", "abort"},
                "episode": {"stop", "abort"},
                "rate": {"rate"},
                "reveal": {"next"},
            }.get(phase, set())
            if action not in allowed:
                return _refusal(
                    HTTPStatus.CONFLICT, "wrong_phase", "action", f"{action!r} is not possible now ({phase})"
                )
            if action == "scene_not_ready":
                self._state["message"] = (
                    "Take your time: restore the scene to match the start image, then press Scene ready."
                )
                return HTTPStatus.OK, {"ok": True}
            if action == "abort":
                reason = body.get("reason")
                fault = body.get("fault", "operator")
                if not isinstance(reason, str) or not reason.strip() or len(reason) > 500:
                    return _refusal(HTTPStatus.BAD_REQUEST, "invalid", "reason", "say why (1-500 characters)")
                if fault not in FAULTS:
                    return _refusal(HTTPStatus.BAD_REQUEST, "invalid", "fault", "operator or robot")
                self._abort = (reason.strip(), fault)
                self._state["message"] = "Aborting the session..."
                if phase == "scene":
                    self._answer = {"action": "abort"}
                self._cond.notify_all()
                return HTTPStatus.OK, {"ok": True}
            if action == "stop":
                self._stop = True
                self._state["message"] = "Stopping this episode..."
                return HTTPStatus.OK, {"ok": True}
            if action == "rate":
                problem = _check_rating(body)
                if problem is not None:
                    return _refusal(HTTPStatus.BAD_REQUEST, "invalid", *problem)
                self._answer = {
                    "action": "rate",
                    "progress_a": int(body["progress_a"]),
                    "progress_b": int(body["progress_b"]),
                    "choice": body["choice"],
                    "reason": body["reason"].strip(),
                    "valid": body["valid"],
                }
                self._state["phase"] = "sending"
            else:
                self._answer = {"action": action}
                if action == "scene_ready":
                    self._state["phase"] = "between"
            self._cond.notify_all()
        return HTTPStatus.OK, {"ok": True}


def _check_rating(body: Mapping[str, Any]) -> tuple[str, str] | None:
    """``(field, message)`` of the first invalid field of a rating, else None."""
    for slot in ("a", "b"):
        value = body.get(f"progress_{slot}")
        if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= 100:
            return f"progress_{slot}", f"progress of {slot.upper()}: a whole number from 0 to 100"
    if body.get("choice") not in ("A", "B", "tie"):
        return "choice", "choose A, B or tie"
    reason = body.get("reason")
    if not isinstance(reason, str) or not reason.strip():
        return "reason", "say why (the reason must not be empty)"
    if len(reason) > MAX_REASON_CHARS:
        return "reason", f"at most {MAX_REASON_CHARS} characters"
    if not isinstance(body.get("valid"), bool):
        return "valid", "say whether the session is valid"
    return None


def _refusal(status: HTTPStatus, code: str, field: str, message: str) -> tuple[HTTPStatus, dict[str, Any]]:
    return status, {"error": {"code": code, "field": field, "message": message}}


def _public_reveal(reveal: Any) -> dict[str, dict[str, str]] | None:
    if not isinstance(reveal, Mapping):
        return None
    return {
        slot: {key: str(reveal[slot].get(key, "")) for key in ("name", "organization", "slug")}
        for slot in ("A", "B")
        if isinstance(reveal.get(slot), Mapping)
    }


def _handler_for(screen: OperatorScreen) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "arena-eval"
        sys_version = ""
        timeout = 15  # seconds a connection may sit idle (a stalled client holds one thread, not the screen)

        def log_message(self, format: str, *args: Any) -> None:
            return  # the terminal belongs to the run's progress lines

        def _host_ok(self) -> bool:
            host = (self.headers.get("Host") or "").lower()
            names = {"127.0.0.1", "localhost", "[::1]", str(screen.host).lower()}
            return host in {f"{name}:{screen.port}" for name in names}

        def _route(self) -> str | None:
            """The path after the token, or None when the token is missing or wrong."""
            path = urlsplit(self.path).path
            prefix = f"/{screen.token}/"
            head = path[: len(prefix)]
            if len(path) < len(prefix) or not hmac.compare_digest(head.encode(), prefix.encode()):
                return None
            return path[len(prefix) :]

        def _send(self, status: HTTPStatus, body: bytes, content_type: str) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.send_header("X-Content-Type-Options", "nosniff")
            self.send_header("X-Frame-Options", "DENY")
            self.send_header("Referrer-Policy", "no-referrer")
            self.send_header("Cross-Origin-Resource-Policy", "same-origin")
            self.send_header(
                "Content-Security-Policy",
                f"default-src 'none'; script-src 'nonce-{screen.nonce}'; style-src 'nonce-{screen.nonce}'; "
                "img-src 'self'; connect-src 'self'; form-action 'none'; frame-ancestors 'none'; "
                "base-uri 'none'",
            )
            self.end_headers()
            if self.command != "HEAD":
                self.wfile.write(body)

        def _json(self, status: HTTPStatus, payload: Mapping[str, Any]) -> None:
            self._send(status, json.dumps(payload).encode(), "application/json")

        def _not_found(self) -> None:
            self._json(HTTPStatus.NOT_FOUND, {"error": {"code": "not_found", "message": "nothing here"}})

        def do_GET(self) -> None:
            if not self._host_ok():
                self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": {"code": "bad_host", "message": "host"}})
                return
            route = self._route()
            if route is None:
                self._not_found()
            elif route == "":
                page = PAGE.replace("__NONCE__", screen.nonce).replace("__TOKEN__", screen.token)
                self._send(HTTPStatus.OK, page.encode(), "text/html; charset=utf-8")
            elif route == "state":
                self._json(HTTPStatus.OK, screen._snapshot())
            elif route == "start.png" and screen._start_png:
                self._send(HTTPStatus.OK, screen._start_png, "image/png")
            elif route.startswith("frame/") and route.endswith(".jpg"):
                data = screen._frame_jpeg(route[len("frame/") : -len(".jpg")])
                if data is None:
                    self._not_found()
                else:
                    self._send(HTTPStatus.OK, data, "image/jpeg")
            else:
                self._not_found()

        do_HEAD = do_GET

        def do_POST(self) -> None:
            if not self._host_ok():
                self._json(HTTPStatus.MISDIRECTED_REQUEST, {"error": {"code": "bad_host", "message": "host"}})
                return
            if self._route() != "answer":
                self._not_found()
                return
            token = self.headers.get("X-Arena-Token") or ""
            if not hmac.compare_digest(token.encode(), screen.token.encode()):
                self._json(HTTPStatus.FORBIDDEN, {"error": {"code": "forbidden", "message": "token"}})
                return
            origin = self.headers.get("Origin")
            if origin is not None and origin != f"http://{self.headers.get('Host')}":
                self._json(HTTPStatus.FORBIDDEN, {"error": {"code": "forbidden", "message": "origin"}})
                return
            if (self.headers.get("Content-Type") or "").split(";")[0].strip() != "application/json":
                self._json(
                    HTTPStatus.UNSUPPORTED_MEDIA_TYPE,
                    {"error": {"code": "unsupported_media_type", "message": "send application/json"}},
                )
                return
            try:
                length = int(self.headers.get("Content-Length") or "")
            except ValueError:
                length = -1
            if not 0 <= length <= MAX_BODY_BYTES:
                self.close_connection = True
                self._json(
                    HTTPStatus.REQUEST_ENTITY_TOO_LARGE,
                    {
                        "error": {
                            "code": "too_large",
                            "message": f"at most {MAX_BODY_BYTES} bytes, with a length",
                        }
                    },
                )
                return
            try:
                body = json.loads(self.rfile.read(length))
            except (ValueError, UnicodeDecodeError):
                self._json(HTTPStatus.BAD_REQUEST, {"error": {"code": "invalid_json", "message": "not JSON"}})
                return
            status, reply = screen._receive(body)
            self._json(status, reply)

    return Handler


PAGE = """<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>arena-eval: operator screen</title>
<style nonce="__NONCE__">
  body { font: 16px/1.4 system-ui, sans-serif; margin: 0; background: #f4f5f7; color: #1b1f24; }
  header { background: #1b1f24; color: #fff; padding: .6rem 1rem; display: flex; gap: 1rem; flex-wrap: wrap; }
  header b { font-weight: 600; }
  main { padding: 1rem; max-width: 1100px; margin: auto; }
  section { background: #fff; border-radius: 8px; padding: 1rem; margin-bottom: 1rem;
            box-shadow: 0 1px 2px rgba(0,0,0,.08); }
  [hidden] { display: none !important; }
  h2 { margin-top: 0; font-size: 1.2rem; }
  img { max-width: 100%; border-radius: 4px; background: #ddd; }
  .cams { display: grid; grid-template-columns: repeat(auto-fit, minmax(260px, 1fr)); gap: .6rem; }
  .cams figure { margin: 0; } .cams figcaption { font-size: .85rem; color: #555; }
  button { font: inherit; padding: .5rem 1rem; border-radius: 6px; border: 1px solid #888; background: #fff;
           cursor: pointer; margin: .2rem .4rem .2rem 0; }
  button.primary { background: #1f6feb; border-color: #1f6feb; color: #fff; }
  button.danger { background: #fff; border-color: #c62828; color: #c62828; }
  progress { width: 100%; height: 1.2rem; }
  label { display: block; margin: .6rem 0 .2rem; font-weight: 600; }
  input[type=number] { width: 6rem; font: inherit; padding: .3rem; }
  textarea { width: 100%; min-height: 4rem; font: inherit; }
  .choices label, .valid label { display: inline-block; font-weight: normal; margin-right: 1rem; }
  .message { color: #8a5a00; min-height: 1.4em; }
  .error { color: #c62828; min-height: 1.4em; }
  .reveal td { padding: .2rem 1rem .2rem 0; }
  code { background: #eef; padding: 0 .2rem; }
</style>
</head>
<body>
<header><b>arena-eval operator screen</b><span id="where">connecting...</span></header>
<main>
  <p id="message" class="message" role="status"></p>
  <section id="scene" hidden>
    <h2>Restore the scene for slot <span class="slot"></span></h2>
    <p>Arrange the scene to match this start image, then press <b>Scene ready</b>.</p>
    <img id="start-image" alt="the start scene">
    <p id="start-path"></p>
    <button id="scene-ready" class="primary">Scene ready</button>
    <button id="scene-not-ready">Not ready yet</button>
  </section>
  <section id="episode" hidden>
    <h2>Slot <span class="slot"></span> is running</h2>
    <p>Step <span id="step">0</span> / <span id="max-steps">0</span></p>
    <progress id="step-bar" value="0" max="1"></progress>
    <div id="cameras" class="cams"></div>
    <p><button id="stop">Stop this episode</button> (ends it early; you rate what it did)</p>
  </section>
  <section id="rate" hidden>
    <h2>Rate the two episodes</h2>
    <form id="rate-form">
      <label for="progress-a">Progress of policy A (0-100)</label>
      <input id="progress-a" name="progress_a" type="number" min="0" max="100" step="1" required>
      <label for="progress-b">Progress of policy B (0-100)</label>
      <input id="progress-b" name="progress_b" type="number" min="0" max="100" step="1" required>
      <label>Which policy did better?</label>
      <div class="choices">
        <label><input type="radio" name="choice" value="A" required> A</label>
        <label><input type="radio" name="choice" value="B"> B</label>
        <label><input type="radio" name="choice" value="tie"> tie</label>
      </div>
      <label for="reason">Why?</label>
      <textarea id="reason" name="reason" maxlength="5000" required></textarea>
      <label>Was this a valid session?</label>
      <div class="valid">
        <label><input type="radio" name="valid" value="yes" required checked> yes</label>
        <label><input type="radio" name="valid" value="no"> no (something went wrong with the setup)</label>
      </div>
      <p id="rate-error" class="error" role="alert"></p>
      <button id="submit-rating" class="primary" type="submit">Submit</button>
    </form>
  </section>
  <section id="sending" hidden><h2>Sending the results...</h2></section>
  <section id="reveal" hidden>
    <h2 id="reveal-title">Submitted</h2>
    <table class="reveal" id="reveal-table" hidden>
      <tr><td>A was</td><td id="reveal-a"></td></tr>
      <tr><td>B was</td><td id="reveal-b"></td></tr>
    </table>
    <p id="outcome-message"></p>
    <button id="next" class="primary">Next session</button>
  </section>
  <section id="abort-box" hidden>
    <h2>Abort this session</h2>
    <label for="abort-reason">Why?</label>
    <input id="abort-reason" maxlength="500" size="60">
    <label for="abort-fault">Whose fault?</label>
    <select id="abort-fault"><option value="operator">the operator (the scene, handling)</option>
      <option value="robot">the robot</option></select>
    <p id="abort-error" class="error" role="alert"></p>
    <button id="abort-confirm" class="danger">Abort the session</button>
    <button id="abort-cancel">Cancel</button>
  </section>
  <p><button id="abort" class="danger" hidden>Abort the session...</button></p>
  <section id="done" hidden><h2>This run has finished</h2><p>You can close this page.</p></section>
</main>
<script nonce="__NONCE__">
"use strict";
const BASE = "/__TOKEN__/";
const $ = (id) => document.getElementById(id);
const PHASES = ["scene", "episode", "rate", "sending", "reveal", "done"];
let state = null, shownStart = -1, shownFrame = -1, cams = "";

async function post(body) {
  const response = await fetch(BASE + "answer", {
    method: "POST", headers: {"Content-Type": "application/json", "X-Arena-Token": "__TOKEN__"},
    body: JSON.stringify(body), credentials: "omit", cache: "no-store"});
  let reply = {};
  try { reply = await response.json(); } catch (e) { reply = {}; }
  if (!response.ok) throw new Error((reply.error && reply.error.message) || ("HTTP " + response.status));
  poll();
  return reply;
}

function show(phase) {
  const visible = phase === "closed" ? "done" : (phase === "starting" || phase === "between" ? "" : phase);
  for (const name of PHASES) $(name).hidden = name !== visible;
  $("abort").hidden = !(phase === "scene" || phase === "episode") || !$("abort-box").hidden;
  if (!(phase === "scene" || phase === "episode")) $("abort-box").hidden = true;
}

function render(s) {
  state = s;
  $("where").textContent = s.session ? `session ${s.session_no} of ${s.sessions} (${s.session}): ${s.task}`
                                     : "waiting for the session";
  for (const el of document.querySelectorAll(".slot")) el.textContent = s.slot;
  $("message").textContent = s.message || (s.phase === "starting" || s.phase === "between" ? "Working..." : "");
  show(s.phase);
  if (s.phase === "scene" && shownStart !== s.start_seq) {
    shownStart = s.start_seq;
    $("start-image").src = BASE + "start.png?n=" + s.start_seq;
    $("start-path").textContent = s.start_path ? "Saved as " + s.start_path : "";
  }
  if (s.phase === "episode") {
    $("step").textContent = s.step; $("max-steps").textContent = s.max_steps;
    $("step-bar").max = Math.max(1, s.max_steps); $("step-bar").value = s.step;
    const names = s.cameras.join(",");
    if (names !== cams) {
      cams = names; $("cameras").textContent = "";
      for (const name of s.cameras) {
        const fig = document.createElement("figure"), img = document.createElement("img");
        const cap = document.createElement("figcaption");
        img.dataset.camera = name; img.alt = "camera " + name; cap.textContent = name;
        fig.append(img, cap); $("cameras").append(fig);
      }
    }
    if (s.frame_seq !== shownFrame && s.frame_seq > 0) {
      shownFrame = s.frame_seq;
      for (const img of $("cameras").querySelectorAll("img"))
        img.src = BASE + "frame/" + encodeURIComponent(img.dataset.camera) + ".jpg?n=" + s.frame_seq;
    }
  }
  if (s.phase === "reveal") {
    const r = s.reveal;
    $("reveal-table").hidden = !r;
    $("reveal-title").textContent = s.outcome === "submitted" ? "Submitted: the two policies were"
                                    : "The session ended: " + s.outcome;
    if (r) {
      $("reveal-a").textContent = `${r.A.name} (${r.A.organization})`;
      $("reveal-b").textContent = `${r.B.name} (${r.B.organization})`;
    }
    $("outcome-message").textContent = s.outcome === "submitted" ? "" : s.message;
    $("next").textContent = s.session_no < s.sessions ? "Next session" : "Finish";
  }
}

async function poll() {
  try {
    const response = await fetch(BASE + "state", {cache: "no-store", credentials: "omit"});
    if (!response.ok) throw new Error("HTTP " + response.status);
    render(await response.json());
  } catch (e) {
    show("done");
    $("where").textContent = "arena-eval is not running";
  }
}

$("scene-ready").onclick = () => post({action: "scene_ready"}).catch(alertError);
$("scene-not-ready").onclick = () => post({action: "scene_not_ready"}).catch(alertError);
$("stop").onclick = () => post({action: "stop"}).catch(alertError);
$("next").onclick = () => post({action: "next"}).catch(alertError);
$("abort").onclick = () => { $("abort-box").hidden = false; $("abort").hidden = true; $("abort-reason").focus(); };
$("abort-cancel").onclick = () => { $("abort-box").hidden = true; poll(); };
$("abort-confirm").onclick = () => {
  $("abort-error").textContent = "";
  post({action: "abort", reason: $("abort-reason").value, fault: $("abort-fault").value})
    .then(() => { $("abort-box").hidden = true; })
    .catch((e) => { $("abort-error").textContent = e.message; });
};
$("rate-form").onsubmit = (event) => {
  event.preventDefault();
  const form = new FormData($("rate-form"));
  const number = (name) => (form.get(name) === "" ? null : Number(form.get(name)));
  $("rate-error").textContent = "";
  post({action: "rate", progress_a: number("progress_a"), progress_b: number("progress_b"),
        choice: form.get("choice"), reason: form.get("reason") || "", valid: form.get("valid") === "yes"})
    .then(() => $("rate-form").reset())
    .catch((e) => { $("rate-error").textContent = e.message; });
};
function alertError(e) { $("message").textContent = e.message; }
poll();
setInterval(poll, 250);
</script>
</body>
</html>
"""
