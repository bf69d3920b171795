"""The signed-in dashboard (``/me/``): an owner's policies, a lab member's sessions and API keys.

People sign in with Django's session auth. An owner is a member of an organization; a lab member is in
``Lab.members``. Every write goes through the same service as the API; a lab's sessions are shown only through
the blinding gatekeeper ``session_for_evaluator``, so unsubmitted sessions never name their policies here.
"""

from __future__ import annotations

from django.contrib import admin, messages
from django.contrib.auth.decorators import login_required
from django.contrib.auth.views import LoginView
from django.http import Http404, HttpRequest, HttpResponse
from django.shortcuts import redirect
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET, require_POST

from arena.auth import NewKey, client_address, failed_sign_ins
from arena.errors import ArenaError, NotFound
from arena.models import ApiKey, Lab
from arena.selectors.notifications import deliveries_for_user
from arena.selectors.policies import policies_for_owner, policy_get_for_owner
from arena.selectors.relay import incidents_for_owner
from arena.selectors.sessions import session_for_evaluator, sessions_for_lab
from arena.services.accounts import api_key_issue, api_key_revoke
from arena.services.notifications import (
    SETTING_FIELDS,
    notification_settings_get,
    notification_settings_update,
)
from arena.services.policies import policy_register, policy_retire
from arena.web.access import lab_for_member
from arena.web.forms import KeyIssueForm, NotificationSettingsForm, PolicyRegisterForm, add_service_error
from arena.web.render import render_page, stylesheet

signed_in = login_required(login_url="web-login")
CHECKS_SHOWN = 5
INCIDENTS_SHOWN = 5
SESSIONS_SHOWN = 25
DELIVERIES_SHOWN = 20


def _key_form(lab: Lab, data=None) -> KeyIssueForm:
    return KeyIssueForm(data, prefix=f"key-{lab.slug}")


def _render(
    request: HttpRequest,
    *,
    register_form: PolicyRegisterForm | None = None,
    key_form: tuple[Lab, KeyIssueForm] | None = None,
    new_key: tuple[Lab, NewKey] | None = None,
    notification_form: NotificationSettingsForm | None = None,
    status: int = 200,
) -> HttpResponse:
    user = request.user
    is_owner = user.organizations.exists()
    policies = (
        [
            {
                "policy": p,
                "checks": list(p.checks.all()[:CHECKS_SHOWN]),
                "incidents": incidents_for_owner(policy=p, limit=INCIDENTS_SHOWN),
            }
            for p in policies_for_owner(user=user)
        ]
        if is_owner
        else []
    )
    labs = []
    for lab in user.labs.select_related("organization").order_by("name"):
        labs.append(
            {
                "lab": lab,
                "keys": list(ApiKey.objects.filter(lab=lab).order_by("-created_at")),
                "key_form": key_form[1] if key_form and key_form[0].pk == lab.pk else _key_form(lab),
                "new_key": new_key[1].plaintext if new_key and new_key[0].pk == lab.pk else None,
                "sessions": [
                    session_for_evaluator(s, minted_for=None)
                    for s in sessions_for_lab(lab=lab)[:SESSIONS_SHOWN]
                ],
            }
        )
    notifications = None
    if is_owner or labs:
        prefs = notification_settings_get(user=user)
        notifications = {
            "form": notification_form
            or NotificationSettingsForm(initial={f: getattr(prefs, f) for f in SETTING_FIELDS}),
            "secret": prefs.webhook_secret,
            "deliveries": list(deliveries_for_user(user=user, limit=DELIVERIES_SHOWN)),
        }
    return render_page(
        request,
        "arena/me.html",
        {
            "is_owner": is_owner,
            "register_form": register_form or PolicyRegisterForm(user=user),
            "policies": policies,
            "labs": labs,
            "notifications": notifications,
        },
        status=status,
    )


class ThrottledLoginView(LoginView):
    """Django's login view, with failed sign-ins counted per client address (``ARENA_THROTTLE_LOGIN``): over
    the limit, a POST is answered 429 without checking the password at all."""

    def post(self, request, *args, **kwargs):
        wait = failed_sign_ins().wait(client_address(request))
        if wait is not None:
            context = self.get_context_data(
                form=self.get_form_class()(request),
                throttled=f"Too many failed sign-ins from your address; try again in {wait} s.",
            )
            response = self.render_to_response(context, status=429)
            response["Retry-After"] = str(wait)
            return response
        return super().post(request, *args, **kwargs)

    def form_invalid(self, form):
        failed_sign_ins().record(client_address(self.request))
        return super().form_invalid(form)


def admin_sign_in(request: HttpRequest) -> HttpResponse:
    """The admin's login view under the same failed sign-in limit as ``/accounts/login/`` (one count per
    address for both forms)."""
    limit, address = failed_sign_ins(), client_address(request)
    if request.method == "POST":
        wait = limit.wait(address)
        if wait is not None:
            response = HttpResponse(
                f"Too many failed sign-ins from your address; try again in {wait} s.\n",
                status=429,
                content_type="text/plain; charset=utf-8",
            )
            response["Retry-After"] = str(wait)
            return response
    response = admin.site.login(request)
    if request.method == "POST" and response.status_code == 200:  # the form again: the sign-in failed
        limit.record(address)
    return response


def sign_in(request: HttpRequest) -> HttpResponse:
    """The login view with this site's template; signed-in people go to their dashboard."""
    view = ThrottledLoginView.as_view(
        template_name="arena/login.html",
        next_page="web-me",
        redirect_authenticated_user=True,
        extra_context={"stylesheet": stylesheet()},
    )
    return view(request)


@never_cache
@signed_in
@require_GET
def dashboard(request: HttpRequest) -> HttpResponse:
    return _render(request)


@signed_in
@require_POST
def policy_register_submit(request: HttpRequest) -> HttpResponse:
    form = PolicyRegisterForm(request.POST, user=request.user)
    if form.is_valid():
        try:
            policy = policy_register(owner=request.user, **form.cleaned_data)
        except ArenaError as exc:
            add_service_error(form, exc)
        else:
            messages.success(
                request, f"Registered {policy.slug}: pending until its first health check passes."
            )
            return redirect("web-me")
    return _render(request, register_form=form, status=400)


@signed_in
@require_POST
def notification_settings_submit(request: HttpRequest) -> HttpResponse:
    form = NotificationSettingsForm(request.POST)
    if form.is_valid():
        try:
            notification_settings_update(user=request.user, **form.cleaned_data)
        except ArenaError as exc:
            add_service_error(form, exc)
        else:
            messages.success(request, "Notification settings saved.")
            return redirect("web-me")
    return _render(request, notification_form=form, status=400)


@signed_in
@require_POST
def policy_retire_submit(request: HttpRequest, slug: str) -> HttpResponse:
    try:
        policy = policy_get_for_owner(user=request.user, slug=slug)
        policy_retire(owner=request.user, policy=policy)
    except NotFound as exc:
        raise Http404(exc.message) from exc
    except ArenaError as exc:
        messages.error(request, exc.message)
    else:
        messages.success(request, f"Retired {slug}.")
    return redirect("web-me")


@never_cache
@signed_in
@require_POST
def key_issue_submit(request: HttpRequest, lab_slug: str) -> HttpResponse:
    """Issue a key for the lab and show its plaintext in this one response; it is never shown again."""
    lab = lab_for_member(user=request.user, slug=lab_slug)
    form = _key_form(lab, request.POST)
    if not form.is_valid():
        return _render(request, key_form=(lab, form), status=400)
    new_key = api_key_issue(lab=lab, name=form.cleaned_data["name"])
    return _render(request, new_key=(lab, new_key))


@signed_in
@require_POST
def key_revoke_submit(request: HttpRequest, lab_slug: str, prefix: str) -> HttpResponse:
    lab = lab_for_member(user=request.user, slug=lab_slug)
    key = ApiKey.objects.filter(lab=lab, prefix=prefix).first()
    if key is None:
        raise Http404("No such key in this lab.")
    # The service revokes among the keys of the actor's principal. The person acts for the lab, and any key of
    # the lab (the one being revoked included) names that principal.
    api_key_revoke(actor=key, prefix=prefix)
    messages.success(request, f"Revoked key pa_{prefix}_…")
    return redirect("web-me")
