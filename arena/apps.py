from django.apps import AppConfig


class ArenaConfig(AppConfig):
    name = "arena"
    default_auto_field = "django.db.models.BigAutoField"
    verbose_name = "Policy arena"

    def ready(self) -> None:
        from django.core import checks

        from arena.api import schema  # noqa: F401 - registers the OpenAPI auth extension
        from arena.storage import check_storage_settings

        checks.register(check_storage_settings)

        from django.core.signals import request_finished, request_started

        # A worker thread serves one request after another: each starts and ends with no log fields bound
        # (arena.middleware.RequestIdMiddleware binds the request's id).
        request_started.connect(_clear_log_context, dispatch_uid="arena-log-context-start")
        request_finished.connect(_clear_log_context, dispatch_uid="arena-log-context-finish")


def _clear_log_context(**_) -> None:
    from policy_server import logs

    logs.clear()
