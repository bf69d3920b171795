"""Named actors for the page tests (those of tests/api: Olivia the owner at Acme Robotics, the Berkeley and
Stanford labs, Oscar the outsider) plus Bruno, a second owner at Beta Robotics, and people who sign in to the
pages: each actor's Django user given a password."""

from __future__ import annotations

import pytest
from django.contrib.auth import get_user_model

from arena.models import Lab
from tests.api.actors import Actor, make_actor
from tests.api.conftest import anonymous, lab1, lab2, outsider, owner  # noqa: F401  (fixtures)
from tests.web.league import League, build_league

PASSWORD = "correct horse battery staple"


@pytest.fixture
def bruno(db) -> Actor:
    return make_actor("bruno", owner="bruno", organization="Beta Robotics")


@pytest.fixture
def league(request, settings, bruno) -> League:
    """The league of ``tests/web/league.py``, played by Olivia, Bruno and the Berkeley and Stanford labs."""
    settings.ARENA_PROVISIONAL_MIN_COMPARISONS = 5
    olivia, labs = request.getfixturevalue("owner"), [request.getfixturevalue(n) for n in ("lab1", "lab2")]
    return build_league(olivia=olivia, bruno=bruno, labs=labs)


def person(username: str, *, lab: str | None = None, staff: bool = False):
    """The user ``username`` (created if needed) with a known password; a member of ``lab`` if given."""
    user, _ = get_user_model().objects.get_or_create(username=username)
    user.set_password(PASSWORD)
    user.is_staff = staff
    user.save()
    if lab:
        Lab.objects.get(name=lab).members.add(user)
    return user


@pytest.fixture
def olivia_user(request):
    """Olivia, who owns Acme's policies, able to sign in."""
    request.getfixturevalue("owner")
    return person("olivia")


@pytest.fixture
def berkeley_member(request):
    """Lena, a member of the Berkeley lab (not of any organization)."""
    request.getfixturevalue("lab1")
    return person("lena", lab="Berkeley Lab")
