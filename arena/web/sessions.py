"""The public session browser: ``/sessions/`` lists published sessions (``arena.selectors.public``), filterable
and paginated; ``/sessions/<id>/`` plays A and B side by side, one synchronised control per camera
(``static/arena/sync.js``), with scores, the choice, the published reason, the scene and a trajectory plot."""

from __future__ import annotations

import io
import logging
import re
from datetime import date
from typing import Any

import pyarrow.parquet as pq
from django.conf import settings
from django.core.cache import cache
from django.core.paginator import Paginator
from django.http import Http404, HttpRequest, HttpResponse
from django.views.decorators.http import require_GET

from arena.errors import NotFound
from arena.models import Trajectory
from arena.selectors.public import published_session, published_session_summary, published_sessions_filtered
from arena.storage import StorageError, get_storage
from arena.web import charts
from arena.web.render import render_page

log = logging.getLogger(__name__)

PAGE_SIZE = 20
TRACE_CACHE_SECONDS = 24 * 3600
SLUG = re.compile(r"[-a-zA-Z0-9_]{1,80}")
ROBOT_TYPES = ("real", "replica")


def _date(value: str) -> date | None:
    try:
        return date.fromisoformat(value) if value else None
    except ValueError:
        return None


def _filters(request: HttpRequest) -> dict[str, Any]:
    """The list's filters from the query string; anything malformed is ignored rather than echoed back."""
    get = request.GET
    policy, category = get.get("policy", ""), get.get("category", "")
    return {
        "policy": policy if SLUG.fullmatch(policy) else "",
        "task_category": category if SLUG.fullmatch(category) else "",
        "robot": get.get("robot", "") if get.get("robot", "") in ROBOT_TYPES else "",
        "since": _date(get.get("since", "")),
        "until": _date(get.get("until", "")),
    }


@require_GET
def session_list(request: HttpRequest) -> HttpResponse:
    filters = _filters(request)
    paginator = Paginator(published_sessions_filtered(**filters), PAGE_SIZE)
    page = paginator.get_page(request.GET.get("page"))
    query = {k: (v.isoformat() if isinstance(v, date) else v) for k, v in filters.items() if v}
    query["category"] = query.pop("task_category", "")
    base_query = "&".join(f"{k}={v}" for k, v in query.items() if v)
    return render_page(
        request,
        "arena/sessions.html",
        {
            "page": page,
            "rows": [published_session_summary(s) for s in page.object_list],
            "filters": filters,
            "robot_types": ROBOT_TYPES,
            "base_query": base_query,
        },
    )


def _trace(trajectory: Trajectory | None, label: str) -> charts.TrajectoryTrace | None:
    """The times, joints and gripper of a verified trajectory, thinned to the plot's resolution and cached (a
    verified trajectory never changes), so a page view reads storage at most once per trajectory and day."""
    if trajectory is None:
        return None
    key = f"arena:trace:{trajectory.pk}"
    columns = cache.get(key)
    if columns is None:
        columns = _read_trace(trajectory)
        if columns is None:
            return None
        cache.set(key, columns, timeout=TRACE_CACHE_SECONDS)
    return charts.TrajectoryTrace(label=label, **columns)


def _read_trace(trajectory: Trajectory) -> dict[str, list] | None:
    """``{"t", "joints", "gripper"}`` of a trajectory read from storage (at most TRAJECTORY_MAX_BYTES; it was
    checked on upload), every k-th row so that at most MAX_TRACE_POINTS remain; None when it cannot be read."""
    buffer = io.BytesIO()
    try:
        for chunk in get_storage().open(key=trajectory.object_key):
            buffer.write(chunk)
            if buffer.tell() > settings.TRAJECTORY_MAX_BYTES:
                return None
        columns = ["timestamp", "observation.joint_position", "observation.gripper_position"]
        table = pq.read_table(buffer, columns=columns)
    except (StorageError, OSError, ValueError) as exc:
        log.warning("trajectory %s not plotted: %s", trajectory.pk, exc)
        return None
    step = max(1, -(-table.num_rows // charts.MAX_TRACE_POINTS))
    table = table.take(list(range(0, table.num_rows, step)))
    return {
        "t": table.column("timestamp").to_pylist(),
        "joints": table.column("observation.joint_position").to_pylist(),
        "gripper": table.column("observation.gripper_position").to_pylist(),
    }


@require_GET
def session_page(request: HttpRequest, session_id) -> HttpResponse:
    try:
        data = published_session(session_id=session_id)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    storage = get_storage()
    cameras = sorted({v.camera for slot in "AB" for v in data["videos"][slot]})
    groups = []
    for camera in cameras:
        pair = {}
        for slot in "AB":
            video = next((v for v in data["videos"][slot] if v.camera == camera), None)
            if video is not None:
                pair[slot] = {
                    "url": storage.download_url(key=video.object_key)[0],
                    "type": video.content_type,
                }
        groups.append({"camera": camera, "A": pair.get("A"), "B": pair.get("B")})
    traces = [
        trace
        for slot in "AB"
        if (trace := _trace(data["trajectories"].get(slot), f"{slot}: {data['policy_' + slot.lower()].slug}"))
        is not None
    ]
    plot = (
        charts.trajectory_plot(traces, ident="trajectories", title="Joint and gripper traces of A and B")
        if traces
        else None
    )
    scene = data["scene"]
    return render_page(
        request,
        "arena/session.html",
        {
            "s": data,
            "groups": groups,
            "plot": plot,
            "perturbation": scene.get("perturbation"),
            "seed": scene.get("seed"),
            "scene_items": sorted((k, v) for k, v in scene.items() if k not in ("perturbation",)),
        },
    )
