"""Video endpoints: labs declare and finish uploads; whoever ``arena.selectors.videos`` allows plays them."""

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
from arena.auth import IsLab, Principal
from arena.models import SLOTS, Video
from arena.selectors.videos import video_playback_url, video_view
from arena.services import videos as video_services
from arena.services.videos import CAMERA_RE
from arena.storage import VIDEO_EXTENSIONS

ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 401, 403, 404, 409, 422, 429)}


# ``video_upload_start`` checks both (error codes ``invalid_camera``, ``invalid_size``); the fields document them.
@extend_schema_field({"type": "string", "pattern": f"^{CAMERA_RE.pattern}$", "maxLength": 40})
class CameraField(serializers.SlugField):
    """Lower-case letters, digits, '_' and single '-', not at either end."""


@extend_schema_field({"type": "integer", "minimum": 1, "maximum": settings.VIDEO_MAX_BYTES})
class VideoSizeField(serializers.IntegerField):
    """Bytes, 1 to VIDEO_MAX_BYTES."""


class VideoStartIn(InputSerializer):
    slot = serializers.ChoiceField(choices=list(SLOTS))
    camera = CameraField(max_length=40, help_text="e.g. wrist, external-1")
    content_type = serializers.ChoiceField(choices=list(VIDEO_EXTENSIONS))
    size = VideoSizeField(min_value=1, help_text="Bytes; at most the server's VIDEO_MAX_BYTES.")
    sha256 = serializers.RegexField(r"^[0-9a-fA-F]{64}$", help_text="Hex SHA-256 of the file.")


class UploadOut(serializers.Serializer):
    method = serializers.ChoiceField(
        choices=["POST", "PUT"],
        help_text="POST: a multipart form with `fields` first and the file last (S3). PUT: the raw bytes.",
    )
    url = serializers.URLField()
    headers = serializers.DictField(child=serializers.CharField(), help_text="Send these headers (PUT).")
    fields = serializers.DictField(child=serializers.CharField(), help_text="Send these form fields (POST).")


class VideoStartOut(serializers.Serializer):
    id = serializers.UUIDField()
    upload = UploadOut()
    expires_at = serializers.DateTimeField(help_text="The upload URL stops working at this time.")


class VideoOut(serializers.Serializer):
    id = serializers.UUIDField()
    slot = serializers.ChoiceField(choices=list(SLOTS))
    camera = serializers.CharField()
    state = serializers.ChoiceField(choices=Video.State.values)
    size = serializers.IntegerField()
    url = serializers.URLField(allow_null=True, help_text="Short-lived playback URL (verified videos only).")
    expires_at = serializers.DateTimeField(allow_null=True)


def upload_started(object_id: uuid.UUID, target) -> dict:
    """The body of a started upload (videos, trajectories): the object's id and where to send its bytes."""
    upload = {"method": target.method, "url": target.url, "headers": target.headers, "fields": target.fields}
    return {"id": str(object_id), "upload": upload, "expires_at": target.expires_at}


def _principal(request) -> Principal | None:
    return request.user if isinstance(request.user, Principal) else None


class VideoStartView(ApiView):
    permission_classes = [IsLab]

    @extend_schema(
        operation_id="videos_upload_start",
        summary="Declare one camera's recording of one slot and get a short-lived upload URL",
        description="Upload the file to `upload.url` before `expires_at`, then call the finish endpoint. "
        "Repeating the same declaration while the video is pending returns a fresh URL for the same object.",
        request=VideoStartIn,
        parameters=[IDEMPOTENCY],
        responses={201: VideoStartOut, **ERRORS},
    )
    def post(self, request, session_id: uuid.UUID):
        data = VideoStartIn(data=request.data)
        data.is_valid(raise_exception=True)
        video, target = video_services.video_upload_start(
            lab=request.user.lab, session_id=session_id, **data.validated_data
        )
        return Response(VideoStartOut(upload_started(video.id, target)).data, status=status.HTTP_201_CREATED)


class VideoFinishView(ApiView):
    permission_classes = [IsLab]

    @extend_schema(
        operation_id="videos_upload_finish",
        summary="Verify an uploaded video against its declared size, content type and SHA-256",
        description="200 with `state: verified`. When the object does not match the declaration it is "
        "deleted and the answer is 422 `video_rejected` (declare the video again to retry). 409 "
        "`video_not_uploaded` when nothing was uploaded yet.",
        request=None,
        parameters=[IDEMPOTENCY],
        responses={
            200: VideoOut,
            **ERRORS,
            503: OpenApiResponse(
                ErrorSerializer,
                description="Storage is "
                "unreachable (`storage_unavailable`); the video stays pending: finish it again later.",
            ),
        },
    )
    def post(self, request, video_id: uuid.UUID):
        video = video_services.video_upload_finish(lab=request.user.lab, video_id=video_id)
        if video.state == Video.State.REJECTED:
            # Returned, not raised, so that the rejection is committed even inside an idempotent request.
            return Response(
                error_body(
                    "video_rejected",
                    "The uploaded file did not match the declared size, content type or SHA-256 and was "
                    "deleted; declare the video again to retry.",
                ),
                status=status.HTTP_422_UNPROCESSABLE_ENTITY,
            )
        return Response(VideoOut(video_view(principal=_principal(request), video=video)).data)


class VideoDetailView(ApiView):
    permission_classes = [AllowAny]

    @extend_schema(
        operation_id="videos_retrieve",
        summary="A video and a short-lived playback URL, for those allowed to see it",
        description="Private while the session is blind. After the preference: the lab and the owners of "
        "both policies. Public (no key needed) when both policies opted in to public videos. Others get 404.",
        responses={200: VideoOut, **ERRORS},
    )
    def get(self, request, video_id: uuid.UUID):
        return Response(VideoOut(video_playback_url(principal=_principal(request), video_id=video_id)).data)
