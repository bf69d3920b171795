"""The HTTP client of the arena API (the OpenAPI contract at /api/schema/); no Django imports."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import requests


class ApiError(Exception):
    """The server refused a request: ``status``, ``code`` and ``field`` come from its error body."""

    def __init__(self, status: int, code: str, message: str, field: str | None = None) -> None:
        super().__init__(f"{message} ({code}{', field ' + field if field else ''})")
        self.status = status
        self.code = code
        self.message = message
        self.field = field


class ServerUnreachable(Exception):
    """The network or the server is down; the request may be retried later."""


class ArenaApi:
    def __init__(self, server_url: str, api_key: str, *, timeout: float = 30.0) -> None:
        self.base = server_url.rstrip("/") + "/api/v1"
        self.timeout = timeout
        self.http = requests.Session()
        self.http.headers.update({"Authorization": f"Api-Key {api_key}", "Accept": "application/json"})

    def close(self) -> None:
        """Close the pooled keep-alive connections (a server thread may hold resources for each)."""
        self.http.close()

    def __enter__(self) -> ArenaApi:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def _call(self, method: str, path: str, body: dict | None = None, *, idem: str | None = None) -> Any:
        headers = {"Idempotency-Key": idem} if idem else {}
        try:
            response = self.http.request(
                method, self.base + path, json=body, headers=headers, timeout=self.timeout
            )
        except requests.RequestException as exc:
            raise ServerUnreachable(f"cannot reach {self.base}: {exc.__class__.__name__}") from exc
        if response.status_code >= 500:
            raise ServerUnreachable(f"{method} {path}: server error {response.status_code}")
        if response.status_code >= 400:
            try:
                error = response.json()["error"]
            except (ValueError, KeyError, TypeError):
                raise ApiError(response.status_code, "http_error", response.text[:200]) from None
            raise ApiError(response.status_code, error["code"], error["message"], error.get("field"))
        return response.json() if response.content else None

    def me(self) -> dict:
        return self._call("GET", "/me/")

    def robots(self) -> list[dict]:
        return self._call("GET", "/robots/")

    def register_robot(self, profile: dict) -> dict:
        return self._call("POST", "/robots/", profile)

    def request_session(
        self,
        *,
        robot: str,
        task: str,
        task_category: str = "",
        scene_notes: str = "",
        idem: str | None = None,
    ) -> dict:
        body = {"robot": robot, "task": task, "task_category": task_category, "scene_notes": scene_notes}
        return self._call("POST", "/sessions/", body, idem=idem)

    def session(self, session_id: str) -> dict:
        return self._call("GET", f"/sessions/{session_id}/")

    def sessions(self, *, state: str | None = None, limit: int = 20) -> dict:
        query = f"?limit={limit}" + (f"&state={state}" if state else "")
        return self._call("GET", f"/sessions/{query}")

    def report_episode(self, session_id: str, episode: dict, *, idem: str) -> dict:
        return self._call("POST", f"/sessions/{session_id}/episodes/", episode, idem=idem)

    def submit_preference(self, session_id: str, preference: dict, *, idem: str) -> dict:
        return self._call("POST", f"/sessions/{session_id}/preference/", preference, idem=idem)

    def abort(self, session_id: str, *, reason: str, fault: str, idem: str) -> dict:
        return self._call(
            "POST", f"/sessions/{session_id}/abort/", {"reason": reason, "fault": fault}, idem=idem
        )

    def start_video(self, session_id: str, video: dict, *, idem: str) -> dict:
        return self._call("POST", f"/sessions/{session_id}/videos/", video, idem=idem)

    def finish_video(self, video_id: str, *, idem: str) -> dict:
        return self._call("POST", f"/videos/{video_id}/finish/", {}, idem=idem)

    def start_trajectory(self, session_id: str, trajectory: dict, *, idem: str) -> dict:
        return self._call("POST", f"/sessions/{session_id}/trajectories/", trajectory, idem=idem)

    def finish_trajectory(self, trajectory_id: str, *, idem: str) -> dict:
        return self._call("POST", f"/trajectories/{trajectory_id}/finish/", {}, idem=idem)

    def upload(self, target: dict, path: Path, content_type: str) -> None:
        """Send a file to a presigned target (PUT or POST form) straight to storage."""
        try:
            with path.open("rb") as fh:
                if target["method"] == "POST":
                    files = {"file": (path.name, fh, content_type)}
                    response = requests.post(
                        target["url"], data=target.get("fields") or {}, files=files, timeout=self.timeout
                    )
                else:
                    headers = {"Content-Type": content_type, **(target.get("headers") or {})}
                    response = requests.put(target["url"], data=fh, headers=headers, timeout=self.timeout)
        except requests.RequestException as exc:
            raise ServerUnreachable(f"upload failed: {exc.__class__.__name__}") from exc
        if response.status_code >= 500:
            raise ServerUnreachable(f"upload failed: storage error {response.status_code}")
        if response.status_code >= 400:
            raise ApiError(response.status_code, "upload_refused", response.text[:300])
