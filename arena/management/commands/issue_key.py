"""``manage.py issue_key --lab NAME`` / ``--owner USERNAME``: create the principal if needed, print a new key."""

from __future__ import annotations

from django.core.management.base import BaseCommand, CommandError

from arena.services.accounts import api_key_issue, lab_get_or_create, owner_get_or_create


class Command(BaseCommand):
    help = (
        "Create an API key for a lab or a policy owner (created if missing); prints the key alone on stdout."
    )

    def add_arguments(self, parser) -> None:
        who = parser.add_mutually_exclusive_group(required=True)
        who.add_argument("--lab", help="Evaluator lab name")
        who.add_argument("--owner", help="Policy owner's username")
        parser.add_argument(
            "--organization", help="Organization of a new lab or owner (default: its own name)"
        )
        parser.add_argument("--name", default="", help="A label for the key")

    def handle(
        self, *args, lab: str | None, owner: str | None, organization: str | None, name: str, **options
    ):
        if lab is not None and not lab.strip() or owner is not None and not owner.strip():
            raise CommandError("--lab / --owner needs a non-empty name")
        if lab:
            new = api_key_issue(lab=lab_get_or_create(name=lab.strip(), organization=organization), name=name)
        else:
            new = api_key_issue(
                user=owner_get_or_create(username=owner.strip(), organization=organization), name=name
            )
        self.stdout.write(new.plaintext)
