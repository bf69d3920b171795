"""Named actors for the page tests (those of tests/api: Olivia the owner at Acme Robotics, the Berkeley and
Stanford labs, Oscar the outsider) plus Bruno, a second owner at Beta Robotics, and people who sign in to the
pages: each actor's Django user given a password."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from django.contrib.auth import get_user_model
from django.db import transaction
from django.test import override_settings

from arena.models import Lab
from tests.api.actors import Actor, make_actor
from tests.api.conftest import anonymous, lab1, lab2, outsider, owner  # noqa: F401  (fixtures)
from tests.web.league import League, build_league, league_actors

PASSWORD = "correct horse battery staple"


@pytest.fixture
def bruno(db) -> Actor:
    return make_actor("bruno", owner="bruno", organization="Beta Robotics")


@pytest.fixture(scope="class")
def _league_rows(django_db_setup, django_db_blocker) -> Iterator[League]:
    """The league, built once for a test class inside a transaction that is rolled back after the class's last
    test. Each test runs in a savepoint of it (pytest-django's ``db``), as with Django's ``setUpTestData``, so
    what a test writes goes with it and every test sees the league as built. Tests that use it live in a class,
    so that the other tests of their module never see its rows."""
    with (
        django_db_blocker.unblock(),
        override_settings(ARENA_PROVISIONAL_MIN_COMPARISONS=5),
        transaction.atomic(),
    ):
        olivia, bruno, labs = league_actors()
        yield build_league(olivia=olivia, bruno=bruno, labs=labs)
        transaction.set_rollback(True)


@pytest.fixture
def league(_league_rows, db) -> League:
    """The league of ``tests/web/league.py``, played by Olivia, Bruno and the Berkeley and Stanford labs (built
    once per test class: see ``_league_rows``)."""
    return _league_rows


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
