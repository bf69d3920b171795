"""``manage.py issue_key --lab NAME`` / ``--owner USERNAME``: create the principal if needed, print a new key.

``--invite`` also prints a one-time link at which the owner (or the lab's member, ``--member``, by default a
user named after the lab) sets a password for the pages; ``--no-key`` prints the link alone.
"""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from arena.errors import ArenaError
from arena.services.accounts import (
    account_invite,
    api_key_issue,
    lab_get_or_create,
    lab_member_get_or_create,
    owner_get_or_create,
)


class Command(BaseCommand):
    help = (
        "Create an API key for a lab or a policy owner (created if missing); prints the key alone on stdout. "
        "With --invite, a second line holds a one-time password-set link for the web pages."
    )

    def add_arguments(self, parser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--lab", help="Evaluator lab name")
        who.add_argument("--owner", help="Policy owner's username")
        parser.add_argument(
            "--organization", help="Organization of a new lab or owner (default: its own name)"
        )
        parser.add_argument("--name", default="", help="A label for the key")
        parser.add_argument(
            "--invite",
            action="store_true",
            help="also print a one-time link to set a password and sign in to /me/ (valid ARENA_INVITE_TTL_SECONDS)",
        )
        parser.add_argument(
            "--member", help="with --lab --invite: the lab member's username (default: the lab's slug)"
        )
        parser.add_argument(
            "--no-key", action="store_true", help="with --invite: issue no key, print the link only"
        )

    def handle(
        self,
        *args,
        lab: str | None,
        owner: str | None,
        organization: str | None,
        name: str,
        invite: bool,
        member: str | None,
        no_key: bool,
        **options,
    ):
        if lab is not None and not lab.strip() or owner is not None and not owner.strip():
            raise CommandError("--lab / --owner needs a non-empty name")
        if (member or no_key) and not invite:
            raise CommandError("--member and --no-key go with --invite")
        if member is not None and not lab:
            raise CommandError("--member goes with --lab (an owner signs in as themselves)")
        try:
            if lab:
                principal = lab_get_or_create(name=lab.strip(), organization=organization)
                person = (
                    lab_member_get_or_create(lab=principal, username=member or principal.slug)
                    if invite
                    else None
                )
                new = None if no_key else api_key_issue(lab=principal, name=name)
            else:
                person = owner_get_or_create(username=owner.strip(), organization=organization)
                new = None if no_key else api_key_issue(user=person, name=name)
            link = account_invite(user=person) if invite else None
        except ArenaError as exc:
            raise CommandError(exc.message) from exc
        if new is not None:
            self.stdout.write(new.plaintext)
        if link is not None:
            self.stdout.write(link)
            self.stderr.write(
                f"The link above lets {person.get_username()} set a password once; send it privately. "
                "It stops working once used or when it expires."
            )
