"""The caller's notification settings and delivery log (owner keys; lab members configure theirs on /me/)."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework.response import Response

from arena.api.base import ApiView
from arena.api.serializers import (
    ErrorSerializer,
    NotificationDeliveryOut,
    NotificationSettingsIn,
    NotificationSettingsOut,
)
from arena.auth import IsOwner
from arena.selectors.notifications import deliveries_for_user
from arena.services import notifications as notification_services

ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 401, 403, 404, 409, 422, 429)}


class NotificationSettingsView(ApiView):
    permission_classes = [IsOwner]

    @extend_schema(
        operation_id="notifications_retrieve",
        summary="Your notification settings, with the webhook's signing secret",
        responses={200: NotificationSettingsOut, **ERRORS},
    )
    def get(self, request):
        row = notification_services.notification_settings_get(user=request.user.user)
        return Response(NotificationSettingsOut(row).data)

    @extend_schema(
        operation_id="notifications_update",
        summary="Change your notification settings (rotate_secret: draw a new webhook secret)",
        request=NotificationSettingsIn,
        responses={200: NotificationSettingsOut, **ERRORS},
    )
    def patch(self, request):
        data = NotificationSettingsIn(data=request.data)
        data.is_valid(raise_exception=True)
        row = notification_services.notification_settings_update(
            user=request.user.user, **data.validated_data
        )
        return Response(NotificationSettingsOut(row).data)


class NotificationDeliveriesView(ApiView):
    permission_classes = [IsOwner]

    @extend_schema(
        operation_id="notifications_deliveries_list",
        summary="Your newest notifications and every attempt to deliver them",
        responses={200: NotificationDeliveryOut(many=True), **ERRORS},
    )
    def get(self, request):
        return Response(NotificationDeliveryOut(deliveries_for_user(user=request.user.user), many=True).data)
