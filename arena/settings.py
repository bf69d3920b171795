"""The one settings module, driven by environment variables.

Defaults give the embedded mode: a SQLite file under ``var/``, Celery tasks run eagerly in-process and videos
live on local disk. ``DATABASE_URL``, ``CELERY_BROKER_URL`` and the ``S3_*`` variables switch to Postgres, a
real broker and S3. See README.md ("Settings reference") for every variable.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import secrets
from datetime import timedelta
from pathlib import Path

import dj_database_url
from celery.schedules import crontab

# The ranking fits are small dense linear algebra, where OpenBLAS's thread pool costs more than it saves
# (measured on 2 shared cores: 30 policies x 3,000 comparisons 0.23 s with threads, 0.08 s without; 1,000 x
# 10^6 3.4 s vs 1.6 s). Effective because this module loads before numpy (manage.py, the WSGI app, Celery);
# an operator's OPENBLAS_NUM_THREADS wins.
os.environ.setdefault("OPENBLAS_NUM_THREADS", os.environ.get("ARENA_BLAS_THREADS", "1"))

from policy_server import netguard as _endpoint_guard

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
# Django's test runner adds "testserver" itself; production never answers to it.
ALLOWED_HOSTS = [h for h in env_str("ARENA_ALLOWED_HOSTS", "127.0.0.1,localhost").split(",") if h]
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
    "drf_spectacular_sidecar",
    "arena",
]

MIDDLEWARE = [
    "arena.middleware.RequestIdMiddleware",
    "arena.metrics.RequestMetricsMiddleware",
    "django.middleware.security.SecurityMiddleware",
    "arena.middleware.ContentSecurityPolicyMiddleware",
    "arena.middleware.KeyInUrlMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
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
# Invitation links (manage.py issue_key --invite) are Django password-reset links: valid this long, once.
PASSWORD_RESET_TIMEOUT = env_int("ARENA_INVITE_TTL_SECONDS", 3 * 24 * 3600)
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]

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
    "release-build": {"task": "arena.tasks.release_build_due", "schedule": crontab(minute=41)},
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
# Episode trajectories (Parquet): the largest file, the largest Parquet footer (schema and row-group metadata)
# the server parses, and the most rows (control steps) one episode may have.
TRAJECTORY_MAX_BYTES = env_int("ARENA_TRAJECTORY_MAX_BYTES", 32 * 1024 * 1024)
TRAJECTORY_FOOTER_MAX_BYTES = env_int("ARENA_TRAJECTORY_FOOTER_MAX_BYTES", 256 * 1024)
TRAJECTORY_MAX_STEPS = env_int("ARENA_TRAJECTORY_MAX_STEPS", 100_000)
# Unpublished episode data (videos and trajectories of submitted sessions that may not be published) is deleted
# this many days after the session ended (0: kept). Aborted and expired sessions use VIDEO_RETENTION_DAYS.
ARENA_UNPUBLISHED_RETENTION_DAYS = env_int("ARENA_UNPUBLISHED_RETENTION_DAYS", 0)
# Releases: storage prefix of their files; built on a schedule (hours between builds; 0: on demand only).
ARENA_RELEASE_PREFIX = env_str("ARENA_RELEASE_PREFIX", "releases/")
ARENA_RELEASE_EVERY_HOURS = env_int("ARENA_RELEASE_EVERY_HOURS", 24)

# --- The arena ----------------------------------------------------------------------------------------------
ARENA_PUBLIC_URL = env_str("ARENA_PUBLIC_URL", "http://127.0.0.1:8000")
ARENA_MAX_OPEN_SESSIONS_PER_LAB = env_int("ARENA_MAX_OPEN_SESSIONS_PER_LAB", 3)
ARENA_SESSION_LEASE_MINUTES = env_int("ARENA_SESSION_LEASE_MINUTES", 30)
ARENA_CHECK_FAILURES_BEFORE_FAILING = env_int("ARENA_CHECK_FAILURES_BEFORE_FAILING", 3)
ARENA_CHECK_TIMEOUT_SECONDS = float(env_str("ARENA_CHECK_TIMEOUT_SECONDS", "8"))
ARENA_CHECK_ON_REGISTER = env_bool("ARENA_CHECK_ON_REGISTER", True)
ARENA_PROVISIONAL_MIN_COMPARISONS = env_int("ARENA_PROVISIONAL_MIN_COMPARISONS", 10)
# Ranking defences (issue 14 item 5): a lab's, and an organization's labs', share of any policy's comparison
# weight and of the board's; agreeing decisive votes after which a new lab's votes count fully.
ARENA_LAB_MAX_SHARE = float(env_str("ARENA_LAB_MAX_SHARE", "0.5"))
ARENA_ORG_MAX_SHARE = float(env_str("ARENA_ORG_MAX_SHARE", "0.5"))
ARENA_BOARD_MAX_SHARE = float(env_str("ARENA_BOARD_MAX_SHARE", "0.5"))
ARENA_LAB_TRUST_RAMP = float(env_str("ARENA_LAB_TRUST_RAMP", "50"))
ARENA_RELAY_URL = env_str("ARENA_RELAY_URL", "ws://127.0.0.1:8765").rstrip("/")
ARENA_RELAY_SECRET = env_str("ARENA_RELAY_SECRET") or _embedded_secret("relay_secret")
# A relay connection holds its session slot this long unless the relay's status poll renews it.
ARENA_RELAY_ATTACHMENT_LEASE_SECONDS = env_int("ARENA_RELAY_ATTACHMENT_LEASE_SECONDS", 10)
ARENA_POLICY_INCIDENTS_KEPT = env_int("ARENA_POLICY_INCIDENTS_KEPT", 200)

# --- Policy endpoints and health checks (issue 13: SSRF guard, abort re-checks, coarse public times) -------
# Address classes policy endpoints may have besides public ones: "public" (the default), "private" (RFC 1918,
# 100.64/10, fc00::/7), "loopback", or a comma list ("private,loopback") for self-hosted deployments and the
# demo. Link-local and cloud-metadata addresses are refused whatever this says (see policy_server.netguard).
# The relay reads the same variable.
ARENA_ENDPOINT_ALLOW = env_str("ARENA_ENDPOINT_ALLOW", "public")
_endpoint_guard.parse_allow(ARENA_ENDPOINT_ALLOW)  # a typo fails at startup, not at the first registration
# An abort blaming a policy queues one re-check, due after a uniform random delay in this range (seconds).
ARENA_ABORT_RECHECK_MIN_SECONDS = env_int("ARENA_ABORT_RECHECK_MIN_SECONDS", 60)
ARENA_ABORT_RECHECK_MAX_SECONDS = env_int("ARENA_ABORT_RECHECK_MAX_SECONDS", 600)
CELERY_BEAT_SCHEDULE["policy-abort-rechecks"] = {
    "task": "arena.tasks.policy_recheck_due",
    "schedule": timedelta(minutes=1),
}
# Public pages show check times rounded down to this many minutes (owners see exact times of their own).
ARENA_PUBLIC_CHECK_ROUNDING_MINUTES = env_int("ARENA_PUBLIC_CHECK_ROUNDING_MINUTES", 10)

# --- Notifications (issue 18: email and signed webhooks, sent from Celery) --------------------------------
# The console backend prints mails to the worker's output (the demo's "not configured" mode); set
# ARENA_EMAIL_BACKEND=django.core.mail.backends.smtp.EmailBackend and the ARENA_EMAIL_* variables to send them.
EMAIL_BACKEND = env_str("ARENA_EMAIL_BACKEND", "django.core.mail.backends.console.EmailBackend")
EMAIL_HOST = env_str("ARENA_EMAIL_HOST", "localhost")
EMAIL_PORT = env_int("ARENA_EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("ARENA_EMAIL_USER")
EMAIL_HOST_PASSWORD = env_str("ARENA_EMAIL_PASSWORD")
EMAIL_USE_TLS = env_bool("ARENA_EMAIL_USE_TLS", False)
EMAIL_TIMEOUT = env_int("ARENA_EMAIL_TIMEOUT_SECONDS", 10)
DEFAULT_FROM_EMAIL = env_str("ARENA_EMAIL_FROM", "policy-arena <arena@localhost>")
# A failed delivery is retried after 30 s, 60 s, 120 s... (doubling, at most 1 h) until this many attempts.
ARENA_NOTIFY_MAX_ATTEMPTS = env_int("ARENA_NOTIFY_MAX_ATTEMPTS", 6)
ARENA_NOTIFY_RETRY_SECONDS = env_int("ARENA_NOTIFY_RETRY_SECONDS", 30)
ARENA_NOTIFY_TIMEOUT_SECONDS = float(env_str("ARENA_NOTIFY_TIMEOUT_SECONDS", "5"))
# An owner gets at most one digest of new comparisons per this many minutes.
ARENA_NOTIFY_DIGEST_MINUTES = env_int("ARENA_NOTIFY_DIGEST_MINUTES", 60)
CELERY_BEAT_SCHEDULE["notification-resend-stalled"] = {
    "task": "arena.tasks.notification_resend_stalled",
    "schedule": timedelta(minutes=5),
}

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
    # Swagger UI from the pinned drf-spectacular-sidecar package, served by this site: no CDN, works offline.
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "SCHEMA_PATH_PREFIX": "/api/v1",
    "COMPONENT_SPLIT_REQUEST": True,
    "ENUM_NAME_OVERRIDES": {"UploadStateEnum": ["pending", "verified", "rejected", "deleted"]},
    "POSTPROCESSING_HOOKS": [
        "drf_spectacular.hooks.postprocess_schema_enums",
        "arena.api.schema.document_refused_characters",
    ],
}

# Log lines carry the request id (arena.middleware.RequestIdMiddleware), or the Celery task's id, through a
# context filter (policy_server.logs). ARENA_LOG_FORMAT: "text" (readable; the default, the demo) or "json" (one
# object a line; `make serve` sets it).
ARENA_LOG_FORMAT = env_str("ARENA_LOG_FORMAT", "text").strip().lower()
if ARENA_LOG_FORMAT not in {"text", "json"}:
    raise ValueError(f"ARENA_LOG_FORMAT must be 'text' or 'json', not {ARENA_LOG_FORMAT!r}")
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "filters": {"context": {"()": "policy_server.logs.ContextFilter"}},
    "formatters": {
        "text": {"()": "policy_server.logs.TextFormatter"},
        "json": {"()": "policy_server.logs.JsonFormatter"},
    },
    "handlers": {
        "console": {"class": "logging.StreamHandler", "formatter": ARENA_LOG_FORMAT, "filters": ["context"]}
    },
    "root": {"handlers": ["console"], "level": env_str("ARENA_LOG_LEVEL", "INFO")},
    "loggers": {"django.server": {"level": "WARNING"}},
}
# /healthz details and /metrics: for staff, for `Authorization: Bearer <this>`, or (unset, no proxy) loopback.
ARENA_OPS_TOKEN = env_str("ARENA_OPS_TOKEN")
# The worker logs through LOGGING above (and so in the same format), not through a handler of its own.
CELERY_WORKER_HIJACK_ROOT_LOGGER = False

# --- Blinding of assignments, limits and HTTPS hardening (README "Limits and hardening") --------------------
# The sampler's secret: without it the public comparison log and the open code cannot reproduce the pair
# probabilities. Derived from SECRET_KEY by default, so every web process of a deployment shares it.
ARENA_ASSIGNMENT_SECRET = (
    env_str("ARENA_ASSIGNMENT_SECRET")
    or hmac.new(SECRET_KEY.encode(), b"arena.pairing.assignment", hashlib.sha256).hexdigest()
)
# Public pages and releases name a lab by HMAC(lab id) with this secret unless the lab opts in to its name.
ARENA_PSEUDONYM_SECRET = (
    env_str("ARENA_PSEUDONYM_SECRET")
    or hmac.new(SECRET_KEY.encode(), b"arena.lab.pseudonym", hashlib.sha256).hexdigest()
)
ARENA_PAIR_MAX_RATIO = float(env_str("ARENA_PAIR_MAX_RATIO", "3"))
ARENA_PAIR_EXPLORATION = float(env_str("ARENA_PAIR_EXPLORATION", "0.1"))
ARENA_PAIR_JITTER = float(env_str("ARENA_PAIR_JITTER", "0.3"))
# Video declarations per slot: this many per camera of the session's robot (retries of a rejected upload count).
ARENA_VIDEOS_PER_CAMERA = env_int("ARENA_VIDEOS_PER_CAMERA", 2)
ARENA_SESSION_VIDEO_MAX_BYTES = env_int("ARENA_SESSION_VIDEO_MAX_BYTES", 2 * 1024 * 1024 * 1024)
# Failed authentications per client address (invalid API keys; failed web sign-ins), counted in the cache.
ARENA_THROTTLE_FAILED_AUTH = env_str("ARENA_THROTTLE_FAILED_AUTH", "20/min")
ARENA_THROTTLE_LOGIN = env_str("ARENA_THROTTLE_LOGIN", "10/min")

SESSION_COOKIE_HTTPONLY = True
CSRF_COOKIE_HTTPONLY = True  # no script reads it: the forms carry the token
SESSION_COOKIE_SAMESITE = "Lax"
CSRF_COOKIE_SAMESITE = "Lax"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
X_FRAME_OPTIONS = "DENY"
ARENA_HTTPS = env_bool("ARENA_HTTPS", False)
if ARENA_HTTPS:
    SECURE_SSL_REDIRECT = True
    SESSION_COOKIE_SECURE = True
    CSRF_COOKIE_SECURE = True
    SECURE_HSTS_SECONDS = env_int("ARENA_HSTS_SECONDS", 365 * 24 * 3600)
    SECURE_HSTS_INCLUDE_SUBDOMAINS = env_bool("ARENA_HSTS_INCLUDE_SUBDOMAINS", True)
    SECURE_HSTS_PRELOAD = env_bool("ARENA_HSTS_PRELOAD", False)
    if env_bool("ARENA_TRUST_X_FORWARDED_PROTO", False):
        # Only behind a proxy that terminates TLS and overwrites this header on every request.
        SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")
# Static files (the admin's, the vendored Swagger UI, the favicon) are served by WhiteNoise. ``make serve`` runs
# ``collectstatic`` into STATIC_ROOT (gzip-compressed copies beside each file) and sets ARENA_STATIC_FINDERS=0,
# so WhiteNoise serves only the collected files; elsewhere (the demo, tests) it reads them from the installed
# apps at startup, with no collect step.
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedStaticFilesStorage"},
}
WHITENOISE_USE_FINDERS = env_bool("ARENA_STATIC_FINDERS", True)
STATIC_ROOT.mkdir(exist_ok=True)
# Client addresses for throttles: REMOTE_ADDR unless the arena runs behind this many trusted proxies, which
# append to X-Forwarded-For (a client-supplied X-Forwarded-For is never trusted on its own).
REST_FRAMEWORK["NUM_PROXIES"] = env_int("ARENA_NUM_PROXIES", 0)
