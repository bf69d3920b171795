"""Session endpoints for labs. Every session body is built by ``session_for_evaluator``: nothing else."""

from __future__ import annotations

import uuid
from collections.abc import Callable

from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, extend_schema, extend_schema_view
from rest_framework import status
from rest_framework.response import Response
from rest_framework.serializers import Serializer

from arena.api.base import ApiView
from arena.api.serializers import (
    AbortIn,
    EpisodeIn,
    ErrorSerializer,
    PreferenceIn,
    SessionListOut,
    SessionListQuery,
    SessionOut,
    SessionRequestIn,
)
from arena.auth import IsLab
from arena.errors import NotFound
from arena.selectors.sessions import session_for_evaluator, session_get_for_lab, sessions_for_lab
from arena.services import sessions as session_services

ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 401, 403, 404, 409, 422, 429)}
IDEMPOTENCY = OpenApiParameter(
    "Idempotency-Key",
    {"type": "string", "pattern": "^[!-~]{1,100}$"},
    OpenApiParameter.HEADER,
    required=False,
    description="Retrying a POST with the same key returns the first response and writes nothing twice.",
)


def _view(request, session_id: uuid.UUID, code: int = status.HTTP_200_OK) -> Response:
    session = session_get_for_lab(lab=request.user.lab, session_id=session_id)
    return Response(session_for_evaluator(session, minted_for=request.user.api_key), status=code)


class SessionListView(ApiView):
    permission_classes = [IsLab]

    @extend_schema(
        operation_id="sessions_list",
        summary="Your lab's sessions, newest first",
        parameters=[SessionListQuery],
        responses={200: SessionListOut, **ERRORS},
    )
    def get(self, request):
        query = SessionListQuery(data=request.query_params.dict())  # a dict: "?state=" is invalid, not absent
        query.is_valid(raise_exception=True)
        limit = query.validated_data["limit"]
        sessions = sessions_for_lab(lab=request.user.lab, state=query.validated_data.get("state"))
        return Response(
            {
                "count": sessions.count(),
                "results": [
                    session_for_evaluator(s, minted_for=request.user.api_key) for s in sessions[:limit]
                ],
            }
        )

    @extend_schema(
        operation_id="sessions_request",
        summary="Request a blinded pair for a robot and a task (typed before the pair is known)",
        request=SessionRequestIn,
        parameters=[IDEMPOTENCY],
        responses={201: SessionOut, **ERRORS},
    )
    def post(self, request):
        data = SessionRequestIn(data=request.data)
        data.is_valid(raise_exception=True)
        lab = request.user.lab
        robot = lab.robots.filter(name=data.validated_data["robot"]).first()
        if robot is None:
            raise NotFound(
                "robot_not_found", "Your lab has no robot of that name: register it first.", field="robot"
            )
        session = session_services.pair_assign(
            lab=lab,
            robot=robot,
            task=data.validated_data["task"],
            task_category=data.validated_data["task_category"],
            scene_notes=data.validated_data["scene_notes"],
            created_by=request.user.api_key,
        )
        return _view(request, session.id, status.HTTP_201_CREATED)


class SessionDetailView(ApiView):
    permission_classes = [IsLab]

    @extend_schema(operation_id="sessions_retrieve", responses={200: SessionOut, **ERRORS})
    def get(self, request, session_id: uuid.UUID):
        return _view(request, session_id)


class _SessionWrite(ApiView):
    """A lab's write to one of its sessions: validate ``payload``, call ``write``, answer with the session."""

    permission_classes = [IsLab]
    payload: type[Serializer]
    write: Callable[..., object]
    status_code = status.HTTP_201_CREATED

    def post(self, request, session_id: uuid.UUID):
        data = self.payload(data=request.data)
        data.is_valid(raise_exception=True)
        self.write(lab=request.user.lab, session_id=session_id, **data.validated_data)
        return _view(request, session_id, self.status_code)


@extend_schema_view(
    post=extend_schema(
        operation_id="sessions_episodes_report",
        summary="Report one slot's episode",
        request=EpisodeIn,
        parameters=[IDEMPOTENCY],
        responses={201: SessionOut, **ERRORS},
    )
)
class EpisodeReportView(_SessionWrite):
    payload = EpisodeIn
    write = staticmethod(session_services.episode_report)


@extend_schema_view(
    post=extend_schema(
        operation_id="sessions_preference_submit",
        summary="Submit the preference (once). The response reveals both policies.",
        request=PreferenceIn,
        parameters=[IDEMPOTENCY],
        responses={201: SessionOut, **ERRORS},
    )
)
class PreferenceSubmitView(_SessionWrite):
    payload = PreferenceIn
    write = staticmethod(session_services.preference_submit)


@extend_schema_view(
    post=extend_schema(
        operation_id="sessions_abort",
        summary="Abort with a reason and the party at fault",
        request=AbortIn,
        parameters=[IDEMPOTENCY],
        responses={200: SessionOut, **ERRORS},
    )
)
class SessionAbortView(_SessionWrite):
    payload = AbortIn
    write = staticmethod(session_services.session_abort)
    status_code = status.HTTP_200_OK
