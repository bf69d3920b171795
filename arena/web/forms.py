"""Forms of the signed-in pages. Fields mirror the services' arguments; the services do the validation that
matters (slug, endpoint, membership, uniqueness) and their errors are attached to the field they name."""

from __future__ import annotations

from django import forms

from arena.errors import ArenaError
from arena.models import Organization


class PolicyRegisterForm(forms.Form):
    """Arguments of ``arena.services.policies.policy_register``; ``organization`` is one of the owner's."""

    slug = forms.CharField(max_length=80, help_text="3-80 lowercase letters, digits and hyphens; permanent.")
    name = forms.CharField(max_length=120)
    organization = forms.ModelChoiceField(queryset=Organization.objects.none(), empty_label=None)
    endpoint_url = forms.CharField(
        max_length=500,
        label="Endpoint URL",
        help_text="ws:// or wss:// address of your policy server, or dialout://<slug> for a server that "
        "connects out to the relay (arena-policy serve --connect).",
        widget=forms.TextInput(attrs={"placeholder": "wss://policy.example.org:8000"}),
    )
    endpoint_api_key = forms.CharField(
        max_length=200,
        required=False,
        label="Endpoint API key",
        help_text="Optional; sent by the relay to your server, never shown to evaluators.",
        widget=forms.PasswordInput(render_value=False),
    )
    description = forms.CharField(required=False, widget=forms.Textarea(attrs={"rows": 3}))
    license = forms.CharField(max_length=80, required=False)
    open_weights = forms.BooleanField(required=False)
    version_label = forms.CharField(
        max_length=120, required=False, help_text="What it serves: a checkpoint name, a git sha or free text."
    )
    weights_hash = forms.CharField(max_length=128, required=False, help_text="Optional, e.g. sha256:…")

    def __init__(self, *args, user, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.fields["organization"].queryset = user.organizations.order_by("name")


class NotificationSettingsForm(forms.Form):
    """Arguments of ``arena.services.notifications.notification_settings_update``."""

    email_enabled = forms.BooleanField(required=False, label="Email me (to my account's address)")
    webhook_url = forms.CharField(
        max_length=500,
        required=False,
        label="Webhook URL",
        help_text="http(s):// address the arena POSTs signed JSON events to; empty: none.",
    )
    on_policy_health = forms.BooleanField(required=False, label="A policy of mine fails, recovers or changes")
    on_comparisons = forms.BooleanField(required=False, label="Digest of new comparisons")
    on_session_undelivered = forms.BooleanField(
        required=False, label="A session of my lab closed before its results arrived"
    )
    rotate_secret = forms.BooleanField(required=False, label="Draw a new webhook secret")


class KeyIssueForm(forms.Form):
    """Arguments of ``arena.services.accounts.api_key_issue`` for a lab."""

    name = forms.CharField(
        max_length=80, required=False, help_text="What the key is for, e.g. robot-1 laptop."
    )


def add_service_error(form: forms.Form, error: ArenaError) -> None:
    """Show a service's error next to the field it names, or above the form if the form has no such field."""
    field = error.field if error.field in form.fields else None
    form.add_error(field, error.message)
