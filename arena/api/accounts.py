"""Endpoints for the caller's own principal: who am I, API keys, and (labs) robots."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.response import Response

from arena.api.base import ApiView
from arena.api.serializers import (
    ErrorSerializer,
    KeyIn,
    KeyOut,
    LabPublicationIn,
    LabPublicationOut,
    MeOut,
    NewKeyOut,
    RobotIn,
    RobotOut,
)
from arena.auth import IsAuthenticated, IsLab
from arena.models import ApiKey
from arena.selectors.public import lab_pseudonym
from arena.services import accounts as account_services

ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 401, 403, 404, 409, 422, 429)}


class MeView(ApiView):
    permission_classes = [IsAuthenticated]

    @extend_schema(operation_id="me", summary="Who this key belongs to", responses={200: MeOut, **ERRORS})
    def get(self, request):
        principal = request.user
        if principal.is_lab:
            body = {
                "role": "lab",
                "name": principal.lab.name,
                "organization": principal.lab.organization.name,
            }
        else:
            org = principal.user.organizations.order_by("name").first()
            body = {"role": "owner", "name": principal.user.username, "organization": org.name if org else ""}
        return Response({**body, "key_prefix": principal.api_key.prefix})


class KeyListView(ApiView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="keys_list",
        summary="Your principal's keys",
        responses={200: KeyOut(many=True), **ERRORS},
    )
    def get(self, request):
        return Response(KeyOut(self._keys(request), many=True).data)

    @extend_schema(
        operation_id="keys_create",
        summary="Create another key for your lab or yourself (shown once)",
        request=KeyIn,
        responses={201: NewKeyOut, **ERRORS},
    )
    def post(self, request):
        data = KeyIn(data=request.data)
        data.is_valid(raise_exception=True)
        principal = request.user
        new = account_services.api_key_issue(
            lab=principal.lab, user=principal.user, name=data.validated_data["name"]
        )
        return Response({**KeyOut(new.api_key).data, "key": new.plaintext}, status=status.HTTP_201_CREATED)

    @staticmethod
    def _keys(request):
        principal = request.user
        qs = (
            ApiKey.objects.filter(lab=principal.lab)
            if principal.is_lab
            else ApiKey.objects.filter(user=principal.user)
        )
        return qs.order_by("-created_at")


class KeyRevokeView(ApiView):
    permission_classes = [IsAuthenticated]

    @extend_schema(
        operation_id="keys_revoke",
        request=None,
        summary="Revoke one of your keys",
        responses={200: KeyOut, **ERRORS},
    )
    def post(self, request, prefix: str):
        key = account_services.api_key_revoke(actor=request.user.api_key, prefix=prefix)
        return Response(KeyOut(key).data)


class RobotListView(ApiView):
    permission_classes = [IsLab]

    @extend_schema(
        operation_id="robots_list",
        summary="Your lab's robots",
        responses={200: RobotOut(many=True), **ERRORS},
    )
    def get(self, request):
        return Response(RobotOut(request.user.lab.robots.order_by("name"), many=True).data)

    @extend_schema(
        operation_id="robots_register",
        summary="Declare a robot: platform, cameras, action spaces",
        request=RobotIn,
        responses={201: RobotOut, **ERRORS},
    )
    def post(self, request):
        data = RobotIn(data=request.data)
        data.is_valid(raise_exception=True)
        robot = account_services.robot_register(lab=request.user.lab, **data.validated_data)
        return Response(RobotOut(robot).data, status=status.HTTP_201_CREATED)


def _publication(lab) -> dict:
    return {
        "publish_reasons": lab.publish_reasons,
        "publish_name": lab.publish_name,
        "pseudonym": lab_pseudonym(lab.pk),
    }


class LabPublicationView(ApiView):
    permission_classes = [IsLab]

    @extend_schema(
        operation_id="lab_publication",
        summary="What your lab lets the arena publish, and the pseudonym it is published under",
        responses={200: LabPublicationOut, **ERRORS},
    )
    def get(self, request):
        return Response(LabPublicationOut(_publication(request.user.lab)).data)

    @extend_schema(
        operation_id="lab_publication_update",
        summary="Change your lab's defaults: publish reason texts, publish the lab's name",
        description="`publish_reasons` is the default for sessions whose preference does not say "
        "(`reason_public`); it applies to preferences submitted from now on.",
        request=LabPublicationIn,
        responses={200: LabPublicationOut, **ERRORS},
    )
    def patch(self, request):
        data = LabPublicationIn(data=request.data)
        data.is_valid(raise_exception=True)
        lab = account_services.lab_publication_update(lab=request.user.lab, **data.validated_data)
        return Response(LabPublicationOut(_publication(lab)).data)
