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
