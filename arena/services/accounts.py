"""Writes for organizations, labs, owners, robots and API keys."""

from __future__ import annotations

from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.tokens import default_token_generator
from django.db import transaction
from django.urls import reverse
from django.utils import timezone
from django.utils.encoding import force_bytes
from django.utils.http import urlsafe_base64_encode
from django.utils.text import slugify

from arena.auth import NewKey, generate_key, hash_secret
from arena.errors import Conflict, InvalidInput, NotFound, PermissionDenied
from arena.models import ACTION_SPACES, ApiKey, Lab, Organization, Robot

User = get_user_model()


def organization_get_or_create(*, name: str) -> Organization:
    name = name.strip()
    if not name:
        raise InvalidInput("required", "An organization needs a name.", field="organization")
    org, _ = Organization.objects.get_or_create(
        name=name, defaults={"slug": _unique_slug(Organization, name)}
    )
    return org


def lab_get_or_create(*, name: str, organization: str | None = None) -> Lab:
    """A lab named ``name``; created with an organization of the same name unless one is given."""
    with transaction.atomic():
        lab = Lab.objects.filter(name=name).first()
        if lab is not None:
            return lab
        org = organization_get_or_create(name=organization or name)
        return Lab.objects.create(name=name, slug=_unique_slug(Lab, name), organization=org)


def owner_get_or_create(*, username: str, organization: str | None = None) -> User:
    """A policy owner; a new one joins ``organization`` (default: an organization named after them)."""
    if not username.strip():
        raise InvalidInput("required", "An owner needs a username.", field="username")
    with transaction.atomic():
        user, created = User.objects.get_or_create(username=username)
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        if organization or not user.organizations.exists():
            user.organizations.add(organization_get_or_create(name=organization or username))
        return user


def lab_member_get_or_create(*, lab: Lab, username: str) -> User:
    """A person of ``lab`` who signs in to the pages (``/me/``); created with no usable password."""
    if not username.strip():
        raise InvalidInput("required", "A lab member needs a username.", field="username")
    with transaction.atomic():
        user, created = User.objects.get_or_create(username=username.strip())
        if created:
            user.set_unusable_password()
            user.save(update_fields=["password"])
        lab.members.add(user)
        return user


def account_invite(*, user) -> str:
    """An absolute link at which ``user`` sets a password (and is signed in).

    Django's password-reset token: it expires after ``PASSWORD_RESET_TIMEOUT`` seconds
    (``ARENA_INVITE_TTL_SECONDS``, default 3 days) and works once, since it is bound to the password hash and
    the last sign-in, which setting the password and signing in change. Inactive users get no link.
    """
    if not user.is_active:
        raise InvalidInput("inactive_user", f"{user.get_username()} is deactivated; reactivate them first.")
    path = reverse(
        "web-password-set",
        kwargs={
            "uidb64": urlsafe_base64_encode(force_bytes(user.pk)),
            "token": default_token_generator.make_token(user),
        },
    )
    return settings.ARENA_PUBLIC_URL.rstrip("/") + path


def api_key_issue(*, lab: Lab | None = None, user=None, name: str = "") -> NewKey:
    """Create a key for exactly one principal; the plaintext is returned once and never stored."""
    if (lab is None) == (user is None):
        raise InvalidInput("bad_principal", "A key belongs to exactly one lab or one owner.")
    prefix, secret, plaintext = generate_key()
    key = ApiKey.objects.create(
        prefix=prefix, hashed_secret=hash_secret(secret), lab=lab, user=user, name=name
    )
    return NewKey(api_key=key, plaintext=plaintext)


def api_key_revoke(*, actor: ApiKey, prefix: str) -> ApiKey:
    """Revoke one of the actor's principal's keys (a lab's keys for a lab key, a user's for an owner key)."""
    with transaction.atomic():
        key = ApiKey.objects.select_for_update().filter(prefix=prefix).first()
        if key is None or not _same_principal(key, actor):
            raise NotFound("key_not_found", "No such key among yours.", field="prefix")
        if key.revoked_at is None:
            key.revoked_at = timezone.now()
            key.save(update_fields=["revoked_at"])
        return key


def robot_register(
    *,
    lab: Lab,
    name: str,
    platform: str,
    n_external_cameras: int,
    has_wrist_camera: bool,
    has_stereo_camera: bool,
    action_spaces: list[str],
) -> Robot:
    unknown = sorted(set(action_spaces) - set(ACTION_SPACES))
    if unknown:
        raise InvalidInput(
            "unknown_action_space",
            f"Unknown action space(s) {', '.join(unknown)}; known: {', '.join(ACTION_SPACES)}.",
            field="action_spaces",
        )
    if not action_spaces:
        raise InvalidInput("required", "A robot executes at least one action space.", field="action_spaces")
    with transaction.atomic():
        if Robot.objects.filter(lab=lab, name=name).exists():
            raise Conflict("robot_exists", f"Your lab already has a robot named {name!r}.", field="name")
        return Robot.objects.create(
            lab=lab,
            name=name,
            platform=platform,
            n_external_cameras=n_external_cameras,
            has_wrist_camera=has_wrist_camera,
            has_stereo_camera=has_stereo_camera,
            action_spaces=sorted(set(action_spaces)),
        )


def check_owner_in_organization(*, user, organization: Organization) -> None:
    if not organization.members.filter(pk=user.pk).exists():
        raise PermissionDenied(
            "not_a_member", "You are not a member of that organization.", field="organization"
        )


def _same_principal(key: ApiKey, actor: ApiKey) -> bool:
    if actor.lab_id:
        return key.lab_id == actor.lab_id
    return key.user_id == actor.user_id


def _unique_slug(model, name: str) -> str:
    base = slugify(name)[:70] or "x"
    slug, n = base, 1
    while model.objects.filter(slug=slug).exists():
        n += 1
        slug = f"{base}-{n}"
    return slug


def lab_publication_update(
    *, lab: Lab, publish_reasons: bool | None = None, publish_name: bool | None = None
) -> Lab:
    """Change what ``lab`` lets the arena publish; None leaves a setting as it is."""
    fields = {"publish_reasons": publish_reasons, "publish_name": publish_name}
    changed = [name for name, value in fields.items() if value is not None]
    with transaction.atomic():
        lab = Lab.objects.select_for_update().get(pk=lab.pk)
        for name in changed:
            setattr(lab, name, fields[name])
        if changed:
            lab.save(update_fields=changed)
    return lab
