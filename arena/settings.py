"""The one settings module, driven by environment variables.

Defaults give the embedded mode: a SQLite file under ``var/``, Celery tasks run eagerly in-process and videos
live on local disk. ``DATABASE_URL``, ``CELERY_BROKER_URL`` and the ``S3_*`` variables switch to Postgres, a
real broker and S3. See README.md ("Settings reference") for every variable.
"""

from __future__ import annotations

import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from celery.schedules import crontab

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(os.environ.get("ARENA_VAR_DIR", BASE_DIR / "var"))
VAR_DIR.mkdir(parents=True, exist_ok=True)


def env_str(name: str, default: str = "") -> str:
    return os.environ.get(name, default)


def env_bool(name: str, default: bool) -> bool:
    value = os.environ.get(name)
    if value is None or value == "":
        return default
    return value.strip().lower() in {"1", "true", "yes", "on"}


def env_int(name: str, default: int) -> int:
    value = os.environ.get(name)
    return default if value in (None, "") else int(value)


def _embedded_secret(name: str) -> str:
    """A random secret persisted under var/, so the embedded mode needs no configuration."""
    path = VAR_DIR / name
    if not path.exists():
        path.write_text(secrets.token_urlsafe(48))
        path.chmod(0o600)
    return path.read_text().strip()


DEBUG = env_bool("ARENA_DEBUG", False)
SECRET_KEY = env_str("ARENA_SECRET_KEY") or _embedded_secret("secret_key")
ALLOWED_HOSTS = [h for h in env_str("ARENA_ALLOWED_HOSTS", "127.0.0.1,localhost,testserver").split(",") if h]
CSRF_TRUSTED_ORIGINS = [o for o in env_str("ARENA_CSRF_TRUSTED_ORIGINS").split(",") if o]

INSTALLED_APPS = [
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "rest_framework",
    "drf_spectacular",
    "arena",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "arena.middleware.ApiBodyLimitMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "arena.urls"
WSGI_APPLICATION = "arena.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ],
        },
    },
]

DATABASES = {
    "default": dj_database_url.parse(
        env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'arena.sqlite3'}",
        conn_max_age=env_int("ARENA_DB_CONN_MAX_AGE", 0),
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Concurrent writers (gunicorn threads, an eager refit) wait for the lock instead of failing at once.
    DATABASES["default"].setdefault("OPTIONS", {})["timeout"] = 20
    # Transactions take the write lock when they begin: a deferred one that reads and then writes fails at once
    # ("database is locked", no waiting) whenever another connection commits in between, e.g. a relay's call.
    DATABASES["default"]["OPTIONS"]["transaction_mode"] = "IMMEDIATE"
    # A file, not memory, so that a Celery worker process started by the tests sees the test database.
    # One file per test run, so that concurrent runs on one machine do not share it.
    DATABASES["default"]["TEST"] = {"NAME": str(VAR_DIR / f"test-{os.getpid()}.sqlite3")}

DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = False
USE_TZ = True

STATIC_URL = "static/"
STATIC_ROOT = VAR_DIR / "static"
LOGIN_URL = "/admin/login/"

# --- Celery -------------------------------------------------------------------------------------------------
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL")
CELERY_TASK_ALWAYS_EAGER = not CELERY_BROKER_URL
CELERY_TASK_EAGER_PROPAGATES = False
CELERY_RESULT_BACKEND = env_str("CELERY_RESULT_BACKEND") or None
CELERY_TASK_ACKS_LATE = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_BEAT_SCHEDULE = {
    "policy-health-checks": {"task": "arena.tasks.policy_check_all", "schedule": timedelta(minutes=5)},
    "ranking-refit": {"task": "arena.tasks.ranking_refit", "schedule": timedelta(minutes=10)},
    "session-expiry": {"task": "arena.tasks.session_expire_overdue", "schedule": timedelta(minutes=1)},
    "video-retention": {"task": "arena.tasks.video_retention_sweep", "schedule": crontab(minute=17)},
}

# --- Video storage ------------------------------------------------------------------------------------------
S3_ENDPOINT_URL = env_str("S3_ENDPOINT_URL")
S3_BUCKET = env_str("S3_BUCKET")
S3_ACCESS_KEY_ID = env_str("S3_ACCESS_KEY_ID")
S3_SECRET_ACCESS_KEY = env_str("S3_SECRET_ACCESS_KEY")
S3_REGION = env_str("S3_REGION", "us-east-1")
VIDEO_DIR = Path(env_str("ARENA_VIDEO_DIR") or VAR_DIR / "videos")
VIDEO_MAX_BYTES = env_int("ARENA_VIDEO_MAX_BYTES", 200 * 1024 * 1024)
VIDEO_URL_TTL_SECONDS = env_int("ARENA_VIDEO_URL_TTL_SECONDS", 900)
VIDEO_RETENTION_DAYS = env_int("ARENA_VIDEO_RETENTION_DAYS", 7)

# --- The arena ----------------------------------------------------------------------------------------------
ARENA_PUBLIC_URL = env_str("ARENA_PUBLIC_URL", "http://127.0.0.1:8000")
ARENA_MAX_OPEN_SESSIONS_PER_LAB = env_int("ARENA_MAX_OPEN_SESSIONS_PER_LAB", 3)
ARENA_SESSION_LEASE_MINUTES = env_int("ARENA_SESSION_LEASE_MINUTES", 30)
ARENA_CHECK_FAILURES_BEFORE_FAILING = env_int("ARENA_CHECK_FAILURES_BEFORE_FAILING", 3)
ARENA_CHECK_TIMEOUT_SECONDS = float(env_str("ARENA_CHECK_TIMEOUT_SECONDS", "8"))
ARENA_CHECK_ON_REGISTER = env_bool("ARENA_CHECK_ON_REGISTER", True)
ARENA_PROVISIONAL_MIN_COMPARISONS = env_int("ARENA_PROVISIONAL_MIN_COMPARISONS", 10)
ARENA_LAB_MAX_SHARE = float(env_str("ARENA_LAB_MAX_SHARE", "0.5"))
ARENA_RELAY_URL = env_str("ARENA_RELAY_URL", "ws://127.0.0.1:8765").rstrip("/")
ARENA_RELAY_SECRET = env_str("ARENA_RELAY_SECRET") or _embedded_secret("relay_secret")
# A relay connection holds its session slot this long unless the relay's status poll renews it.
ARENA_RELAY_ATTACHMENT_LEASE_SECONDS = env_int("ARENA_RELAY_ATTACHMENT_LEASE_SECONDS", 10)
ARENA_POLICY_INCIDENTS_KEPT = env_int("ARENA_POLICY_INCIDENTS_KEPT", 200)

# --- REST API -----------------------------------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": ["arena.auth.ApiKeyAuthentication"],
    "DEFAULT_PERMISSION_CLASSES": ["rest_framework.permissions.AllowAny"],
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PARSER_CLASSES": ["rest_framework.parsers.JSONParser"],
    "DEFAULT_SCHEMA_CLASS": "drf_spectacular.openapi.AutoSchema",
    "DEFAULT_THROTTLE_CLASSES": ["arena.auth.ApiKeyThrottle"],
    "DEFAULT_THROTTLE_RATES": {
        "api_key": env_str("ARENA_THROTTLE_KEY", "600/min"),
        "anon": env_str("ARENA_THROTTLE_ANON", "120/min"),
    },
    "EXCEPTION_HANDLER": "arena.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
DATA_UPLOAD_MAX_MEMORY_SIZE = env_int("ARENA_MAX_BODY_BYTES", 256 * 1024)

SPECTACULAR_SETTINGS = {
    "TITLE": "policy-arena API",
    "DESCRIPTION": "Double-blind pairwise evaluation of robot policies. Authenticate with `Authorization: Api-Key <key>`.",
    "VERSION": "1.0.0",
    "SERVE_INCLUDE_SCHEMA": False,
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "arena.api.schema.document_refused_characters",
    ],
}

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("ARENA_LOG_LEVEL", "INFO")},
    "loggers": {"django.server": {"level": "WARNING"}},
}
