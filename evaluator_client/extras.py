"""The client's optional parts and the extra that installs each: the base install runs ``configure``,
``status`` and ``flush``; running sessions records videos and trajectories (``lab``: PyAV, pyarrow); the replica needs MuJoCo (``sim``)."""

from __future__ import annotations

from evaluator_client.config import ConfigError

DISTRIBUTION = "robot-policy-arena"


class MissingExtraError(ConfigError):
    """A package of an optional extra is not installed; the message gives the pip command."""


def missing_extra(
    exc: ModuleNotFoundError, *, extra: str, needed_for: str, python: str = ""
) -> MissingExtraError:
    """The error to raise (``from exc``) when importing an extra's package failed with ``exc``."""
    newer = f" (on Python >= {python})" if python else ""
    return MissingExtraError(
        f"{needed_for} needs the {exc.name or 'missing'} package: pip install '{DISTRIBUTION}[{extra}]'{newer}"
    )
