"""Trajectory endpoints: labs declare and finish uploads of Parquet trajectories; whoever may see the session's
episodes downloads them (the rule of ``arena.selectors.videos.episode_data_visible_to``)."""

from __future__ import annotations

import uuid

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema, extend_schema_field
from rest_framework import serializers, status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from arena.api.base import ApiView
from arena.api.errors import error_body
from arena.api.serializers import ErrorSerializer, InputSerializer
from arena.api.sessions import IDEMPOTENCY
from arena.api.videos import UploadOut, _principal, upload_started
from arena.auth import IsLab
from arena.models import SLOTS, Trajectory
from arena.selectors.trajectories import trajectory_download, trajectory_view
from arena.services import trajectories as trajectory_services

ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 401, 403, 404, 409, 422, 429)}


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": settings.TRAJECTORY_MAX_BYTES})
class TrajectorySizeField(serializers.IntegerField):
    """Bytes, 1 to TRAJECTORY_MAX_BYTES."""


class TrajectoryStartIn(InputSerializer):
    slot = serializers.ChoiceField(choices=list(SLOTS))
    size = TrajectorySizeField(min_value=1, help_text="Bytes; at most the server's TRAJECTORY_MAX_BYTES.")
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", help_text="Hex SHA-256 of the file.")


class TrajectoryStartOut(serializers.Serializer):
    id = serializers.UUIDField()
    upload = UploadOut(help_text="Send the file as application/vnd.apache.parquet.")
    expires_at = serializers.DateTimeField(help_text="The upload URL stops working at this time.")


class TrajectoryOut(serializers.Serializer):
    id = serializers.UUIDField()
    slot = serializers.ChoiceField(choices=list(SLOTS))
    state = serializers.ChoiceField(choices=Trajectory.State.values)
    size = serializers.IntegerField()
    sha256 = serializers.CharField()
    n_steps = serializers.IntegerField(allow_null=True, help_text="Control steps (rows), once verified.")
    url = serializers.URLField(
        allow_null=True, help_text="Short-lived download URL (verified, visible only)."
    )
    expires_at = serializers.DateTimeField(allow_null=True)


class TrajectoryStartView(ApiView):
    permission_classes = [IsLab]

    @extend_schema(
        operation_id="trajectories_upload_start",
        summary="Declare one slot's trajectory (Parquet, arena-trajectory/1) and get a short-lived upload URL",
        description="Upload the file to `upload.url` as `application/vnd.apache.parquet` before `expires_at`, "
        "then call the finish endpoint. Repeating the same declaration while it is pending returns a fresh URL.",
        request=TrajectoryStartIn,
        parameters=[IDEMPOTENCY],
        responses={201: TrajectoryStartOut, **ERRORS},
    )
    def post(self, request, session_id: uuid.UUID):
        data = TrajectoryStartIn(data=request.data)
        data.is_valid(raise_exception=True)
        trajectory, target = trajectory_services.trajectory_upload_start(
            lab=request.user.lab, session_id=session_id, **data.validated_data
        )
        body = upload_started(trajectory.id, target)
        return Response(TrajectoryStartOut(body).data, status=status.HTTP_201_CREATED)


class TrajectoryFinishView(ApiView):
    permission_classes = [IsLab]

    @extend_schema(
        operation_id="trajectories_upload_finish",
        summary="Verify an uploaded trajectory: size, SHA-256, Parquet magic bytes and schema",
        description="200 with `state: verified`. A file that does not match is deleted and the answer is 422 "
        "`trajectory_rejected` (declare it again to retry); 409 `trajectory_not_uploaded` when nothing was "
        "uploaded yet; 503 `storage_unavailable` when storage cannot be reached (finish it again later).",
        request=None,
        parameters=[IDEMPOTENCY],
        responses={200: TrajectoryOut, **ERRORS, 503: OpenApiResponse(ErrorSerializer)},
    )
    def post(self, request, trajectory_id: uuid.UUID):
        trajectory = trajectory_services.trajectory_upload_finish(
            lab=request.user.lab, trajectory_id=trajectory_id
        )
        if trajectory.state == Trajectory.State.REJECTED:
            return Response(
                error_body(
                    "trajectory_rejected",
                    "The uploaded file did not match the declared size or SHA-256, or is not a Parquet "
                    "trajectory of the expected schema, and was deleted; declare it again to retry.",
                ),
                status=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        return Response(
            TrajectoryOut(trajectory_view(principal=_principal(request), trajectory=trajectory)).data
        )


class TrajectoryDetailView(ApiView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="trajectories_retrieve",
        summary="A trajectory and a short-lived download URL, for those allowed to see the session's episodes",
        description="Private while the session is blind; the same rule as videos afterwards. Others get 404.",
        responses={200: TrajectoryOut, **ERRORS},
    )
    def get(self, request, trajectory_id: uuid.UUID):
        body = trajectory_download(principal=_principal(request), trajectory_id=trajectory_id)
        return Response(TrajectoryOut(body).data)
