"""Setting a password from an invitation link (``manage.py issue_key --invite``), then straight to ``/me/``."""

from __future__ import annotations

from django.contrib import messages
from django.contrib.auth.views import PasswordResetConfirmView
from django.urls import reverse_lazy

from arena.web.render import stylesheet


class PasswordSetView(PasswordResetConfirmView):
    """Django's password-reset confirmation under the site's template. The link's token moves into the
    session at the first visit (the address bar, and so any Referer, then holds ``set-password`` instead);
    a used, altered or expired link shows a page that says so. A set password signs the person in."""

    template_name = "arena/password_set.html"
    post_reset_login = True
    success_url = reverse_lazy("web-me")

    def get_context_data(self, **kwargs):
        return {**super().get_context_data(**kwargs), "stylesheet": stylesheet()}

    def form_valid(self, form):
        response = super().form_valid(form)
        messages.success(self.request, "Password set: you are signed in.")
        return response
