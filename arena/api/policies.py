"""Policy endpoints: the public list and detail; registration and management by owners."""

from __future__ import annotations

from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import status
from rest_framework.permissions import AllowAny
from rest_framework.response import Response

from arena.api.base import ApiView
from arena.api.serializers import (
    ErrorSerializer,
    PolicyCheckOut,
    PolicyOwnerOut,
    PolicyPublicOut,
    PolicyRegisterIn,
    PolicyUpdateIn,
)
from arena.auth import IsOwner, Principal
from arena.errors import NotFound
from arena.models import Organization
from arena.selectors.policies import policies_for_owner, policies_public, policy_get, policy_get_for_owner
from arena.services import policies as policy_services

ERRORS = {code: OpenApiResponse(ErrorSerializer) for code in (400, 401, 403, 404, 409, 422, 429)}


def _is_owner(request) -> bool:
    return isinstance(request.user, Principal) and request.user.is_owner


class PolicyListView(ApiView):
    def get_permissions(self):
        return [IsOwner()] if self.request.method == "POST" else [AllowAny()]

    @extend_schema(
        operation_id="policies_list",
        summary="Public list of policies in the pool (with ?mine=1 and an owner key: your own, any status)",
        responses={200: PolicyPublicOut(many=True), **ERRORS},
    )
    def get(self, request):
        if request.query_params.get("mine") and _is_owner(request):
            return Response(PolicyOwnerOut(policies_for_owner(user=request.user.user), many=True).data)
        return Response(PolicyPublicOut(policies_public(), many=True).data)

    @extend_schema(
        operation_id="policies_register",
        summary="Register a policy (owner). It starts pending and is activated by its first passing check.",
        request=PolicyRegisterIn,
        responses={201: PolicyOwnerOut, **ERRORS},
    )
    def post(self, request):
        data = PolicyRegisterIn(data=request.data)
        data.is_valid(raise_exception=True)
        fields = dict(data.validated_data)
        org_name = fields.pop("organization")
        organization = None
        if org_name:
            organization = Organization.objects.filter(name=org_name).first()
            if organization is None:
                raise NotFound(
                    "organization_not_found", f"No organization named {org_name!r}.", field="organization"
                )
        policy = policy_services.policy_register(owner=request.user.user, organization=organization, **fields)
        policy.refresh_from_db()
        return Response(PolicyOwnerOut(policy).data, status=status.HTTP_201_CREATED)


class PolicyDetailView(ApiView):
    def get_permissions(self):
        return [IsOwner()] if self.request.method == "PATCH" else [AllowAny()]

    @extend_schema(
        operation_id="policies_retrieve",
        summary="One policy (owners of it see endpoint and health details)",
        responses={
            200: OpenApiResponse(
                PolicyPublicOut,
                description="The public fields; the policy's owners get PolicyOwnerOut (endpoint and health too).",
            ),
            **ERRORS,
        },
    )
    def get(self, request, slug: str):
        if _is_owner(request):
            mine = policies_for_owner(user=request.user.user).filter(slug=slug).first()
            if mine is not None:
                return Response(PolicyOwnerOut(mine).data)
        policy = policy_get(slug=slug)
        if policy.status == policy.Status.PENDING:
            raise NotFound("policy_not_found", f"No policy with slug {slug!r}.", field="slug")
        return Response(PolicyPublicOut(policy).data)

    @extend_schema(
        operation_id="policies_update",
        summary="Change a policy (owner). A new endpoint sends it back to pending until it passes a check.",
        request=PolicyUpdateIn,
        responses={200: PolicyOwnerOut, **ERRORS},
    )
    def patch(self, request, slug: str):
        data = PolicyUpdateIn(data=request.data)
        data.is_valid(raise_exception=True)
        policy = policy_get_for_owner(user=request.user.user, slug=slug)
        policy = policy_services.policy_update(owner=request.user.user, policy=policy, **data.validated_data)
        return Response(PolicyOwnerOut(policy).data)


class PolicyRetireView(ApiView):
    permission_classes = [IsOwner]

    @extend_schema(
        operation_id="policies_retire",
        request=None,
        summary="Retire a policy (owner): it leaves the pool for good.",
        responses={200: PolicyOwnerOut, **ERRORS},
    )
    def post(self, request, slug: str):
        policy = policy_get_for_owner(user=request.user.user, slug=slug)
        policy = policy_services.policy_retire(owner=request.user.user, policy=policy)
        return Response(PolicyOwnerOut(policy).data)


class PolicyChecksView(ApiView):
    permission_classes = [IsOwner]

    @extend_schema(
        operation_id="policies_checks_list",
        summary="Recent health checks of your policy (newest first)",
        responses={200: PolicyCheckOut(many=True), **ERRORS},
    )
    def get(self, request, slug: str):
        policy = policy_get_for_owner(user=request.user.user, slug=slug)
        return Response(PolicyCheckOut(policy.checks.all()[:50], many=True).data)

    @extend_schema(
        operation_id="policies_checks_request",
        request=None,
        summary="Ask for a health check now (owner)",
        responses={202: OpenApiResponse(description="Check scheduled"), **ERRORS},
    )
    def post(self, request, slug: str):
        policy = policy_get_for_owner(user=request.user.user, slug=slug)
        policy_services.policy_check_request(owner=request.user.user, policy=policy)
        return Response(status=status.HTTP_202_ACCEPTED)
