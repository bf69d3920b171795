"""Gatekeepers for the web pages: the labs a signed-in person acts for, and which videos they may play.

The video rule itself lives in ``arena.selectors.videos.video_visible_to`` and is asked, never restated, here:
a person is shown a video when the rule lets through any role they hold (anonymous visitor, owner through
their organizations, or member of a lab).
"""

from __future__ import annotations

from typing import Any

from django.http import Http404

from arena.auth import Principal
from arena.models import Lab, Video
from arena.selectors.videos import video_view, video_visible_to


class WebPrincipal(Principal):
    """One role of a signed-in person: a lab they are a member of, or the person as an owner. The web pages
    authenticate people with Django sessions, so this principal has no ``api_key`` attribute."""

    def __init__(self, *, lab: Lab | None = None, user: Any = None) -> None:
        self.lab = lab
        self.user = user


def principals_of(user) -> list[WebPrincipal | None]:
    """Roles to try for ``user``: None for an anonymous visitor; else the person as owner, then their labs."""
    if not user.is_authenticated:
        return [None]
    return [WebPrincipal(user=user), *(WebPrincipal(lab=lab) for lab in user.labs.all())]


def video_for_visitor(*, principals: list[WebPrincipal | None], video: Video) -> dict[str, Any] | None:
    """The video's view with a playback URL (see ``video_view``) for the first of the visitor's roles
    (``principals_of``) that may see it; None when none may."""
    for principal in principals:
        if video_visible_to(principal=principal, video=video):
            return video_view(principal=principal, video=video)
    return None


def lab_for_member(*, user, slug: str) -> Lab:
    """The lab ``slug`` if ``user`` is one of its members; 404 otherwise (whether or not the lab exists)."""
    lab = user.labs.filter(slug=slug).select_related("organization").first()
    if lab is None:
        raise Http404("No such lab among yours.")
    return lab
