"""``python -m policy_server``: the ``arena-policy`` command."""

from policy_server.cli import main

main()
