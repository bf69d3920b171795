"""The relay's internal API (``/api/v1/relay/...``) and the owner's view of their policy's incidents.

The relay authenticates with ``Authorization: Relay <credential>``, the credential derived from the shared
``ARENA_RELAY_SECRET`` by ``policy_server.relay_token.relay_api_credential`` (never the secret itself). These
endpoints are left out of the public OpenAPI schema: only relays call them. The contract is described in
``policy_server.relay_admission``.
"""

from __future__ import annotations

import hmac

from django.conf import settings
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import authentication, exceptions, permissions, serializers, status
from rest_framework.response import Response
from rest_framework.views import APIView

from arena.api.base import ApiView
from arena.api.serializers import ErrorSerializer
from arena.auth import IsOwner
from arena.errors import NotFound
from arena.models import SLOTS
from arena.selectors.policies import policy_get_for_owner
from arena.selectors.relay import incidents_for_owner
from arena.services import relay as relay_services
from policy_server.relay_admission import AUTH_SCHEME, MAX_INCIDENT_BYTES, STATUS_BATCH
from policy_server.relay_token import MAX_LAB_KEY_BYTES, MAX_SESSION_ID_BYTES, relay_api_credential


class RelayPrincipal:
    """The authenticated caller of the internal API: a relay holding the shared secret."""

    is_authenticated = True
    is_anonymous = False


class RelayCredentialAuthentication(authentication.BaseAuthentication):
    def authenticate(self, request):
        header = authentication.get_authorization_header(request).decode("latin-1")
        scheme, _, credential = header.partition(" ")
        if scheme != AUTH_SCHEME:
            return None
        expected = relay_api_credential(settings.ARENA_RELAY_SECRET)
        if not hmac.compare_digest(credential.strip().encode(), expected.encode()):
            raise exceptions.AuthenticationFailed("Wrong relay credential.")
        return RelayPrincipal(), None

    def authenticate_header(self, request) -> str:
        return AUTH_SCHEME


class IsRelay(permissions.BasePermission):
    message = "This endpoint is for the arena's relays."

    def has_permission(self, request, view) -> bool:
        return isinstance(request.user, RelayPrincipal)


class SlotClaimIn(serializers.Serializer):
    session = serializers.CharField(max_length=MAX_SESSION_ID_BYTES)
    slot = serializers.ChoiceField(choices=SLOTS)
    lab_key = serializers.CharField(max_length=MAX_LAB_KEY_BYTES, allow_blank=True)
    connection = serializers.CharField(max_length=64)


class StatusIn(serializers.Serializer):
    connections = SlotClaimIn(many=True, max_length=STATUS_BATCH)


class ReleaseIn(serializers.Serializer):
    connections = serializers.ListField(child=serializers.CharField(max_length=64), max_length=STATUS_BATCH)


class IncidentIn(serializers.Serializer):
    session = serializers.CharField(max_length=MAX_SESSION_ID_BYTES)
    slot = serializers.ChoiceField(choices=SLOTS)
    kind = serializers.CharField(max_length=40)
    detail = serializers.CharField(max_length=MAX_INCIDENT_BYTES, allow_blank=True, trim_whitespace=False)


class DialoutAttachIn(serializers.Serializer):
    policy = serializers.CharField(max_length=80)
    key = serializers.CharField(max_length=200)
    relay = serializers.CharField(max_length=300)
    connection = serializers.CharField(max_length=64)
    renew = serializers.BooleanField(required=False, default=False)


class DialoutConnectionIn(serializers.Serializer):
    connection = serializers.CharField(max_length=64)


class DialoutPolicyIn(serializers.Serializer):
    policy = serializers.CharField(max_length=80)


class _RelayView(APIView):
    authentication_classes = [RelayCredentialAuthentication]
    permission_classes = [IsRelay]
    # Relays poll every second or two per process: the per-address limits for anonymous callers would cut
    # them off. A caller without the credential never gets past authentication.
    throttle_classes: list = []


@extend_schema(exclude=True)
class RelayAdmitView(_RelayView):
    def post(self, request):
        data = SlotClaimIn(data=request.data)
        data.is_valid(raise_exception=True)
        admitted = relay_services.relay_admit(claim=relay_services.SlotClaim(**data.validated_data))
        proof = admitted.endpoint_proof
        return Response(
            {
                "lease_s": admitted.lease_s,
                "endpoint_proof": None
                if proof is None
                else {"required": proof.required, "nonces": proof.nonces},
            }
        )


@extend_schema(exclude=True)
class RelayStatusView(_RelayView):
    def post(self, request):
        data = StatusIn(data=request.data)
        data.is_valid(raise_exception=True)
        claims = [relay_services.SlotClaim(**c) for c in data.validated_data["connections"]]
        return Response({"closed": relay_services.relay_status(claims=claims)})


@extend_schema(exclude=True)
class RelayReleaseView(_RelayView):
    def post(self, request):
        data = ReleaseIn(data=request.data)
        data.is_valid(raise_exception=True)
        return Response(
            {"released": relay_services.relay_release(connections=data.validated_data["connections"])}
        )


@extend_schema(exclude=True)
class RelayIncidentView(_RelayView):
    def post(self, request):
        data = IncidentIn(data=request.data)
        data.is_valid(raise_exception=True)
        incident = relay_services.incident_record(**data.validated_data)
        return Response({"stored": incident is not None}, status=status.HTTP_201_CREATED)


@extend_schema(exclude=True)
class RelayDialoutAttachView(_RelayView):
    """Does this owner key serve dial-out policy SLUG? If so, record that it is attached to the calling relay."""

    def post(self, request):
        data = DialoutAttachIn(data=request.data)
        data.is_valid(raise_exception=True)
        return Response({"lease_s": relay_services.relay_dialout_attach(**data.validated_data)})


@extend_schema(exclude=True)
class RelayDialoutDetachView(_RelayView):
    def post(self, request):
        data = DialoutConnectionIn(data=request.data)
        data.is_valid(raise_exception=True)
        return Response({"detached": relay_services.relay_dialout_detach(**data.validated_data)})


@extend_schema(exclude=True)
class RelayDialoutLocateView(_RelayView):
    def post(self, request):
        data = DialoutPolicyIn(data=request.data)
        data.is_valid(raise_exception=True)
        relay = relay_services.relay_dialout_locate(**data.validated_data)
        if relay is None:
            raise NotFound("not_attached", "That dial-out policy is not connected to any relay.")
        return Response({"relay": relay})


class DialoutRelayOut(serializers.Serializer):
    relay_url = serializers.CharField(
        help_text="The relay a dial-out policy server connects to (ws:// or wss://)."
    )


class DialoutRelayView(ApiView):
    permission_classes = [permissions.AllowAny]

    @extend_schema(
        operation_id="relay_dialout_retrieve",
        summary="Where a dial-out policy server connects (arena-policy serve --connect)",
        responses={200: DialoutRelayOut},
    )
    def get(self, request):
        return Response({"relay_url": settings.ARENA_RELAY_URL})


class PolicyIncidentOut(serializers.Serializer):
    kind = serializers.CharField()
    detail = serializers.CharField()
    hour = serializers.DateTimeField(help_text="The hour (UTC) the error happened in.")
    session = serializers.CharField(
        allow_null=True, help_text="The session, once its verdict is stored; null before."
    )


class PolicyIncidentsView(ApiView):
    permission_classes = [IsOwner]

    @extend_schema(
        operation_id="policies_incidents_list",
        summary="Errors your policy raised during sessions (owner only; newest first)",
        description="The full error text the relay received from your policy server (labs saw a generic "
        "error). The session is named only once its verdict is stored.",
        responses={
            200: PolicyIncidentOut(many=True),
            **{code: OpenApiResponse(ErrorSerializer) for code in (401, 403, 404, 429)},
        },
    )
    def get(self, request, slug: str):
        policy = policy_get_for_owner(user=request.user.user, slug=slug)
        return Response(PolicyIncidentOut(incidents_for_owner(policy=policy), many=True).data)
