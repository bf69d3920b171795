"""The Celery application. Eager (in-process) unless CELERY_BROKER_URL is set."""

import os

from celery import Celery
from celery.signals import task_postrun, task_prerun

from policy_server import logs

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "arena.settings")

app = Celery("arena")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()

_bound = {}


@task_prerun.connect
def _bind_task_id(task_id=None, **_) -> None:
    """Every line a task logs names the task (an eager task, run inside a request, keeps the request's id)."""
    _bound[task_id] = logs.bind(task_id=task_id)


@task_postrun.connect
def _unbind_task_id(task_id=None, **_) -> None:
    token = _bound.pop(task_id, None)
    if token is not None:
        try:
            logs.unbind(token)
        except ValueError:  # the task ran in another context than its prerun signal (not the case in Celery)
            pass
