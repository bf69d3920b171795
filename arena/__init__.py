"""policy-arena's central server: a Django project with a single app."""

from arena.celery import app as celery_app

__all__ = ["celery_app"]
