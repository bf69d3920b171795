from django.contrib import admin
from django.templatetags.static import static
from django.urls import include, path
from django.views.generic import RedirectView
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from arena import files, health, metrics
from arena.web.dashboard import admin_sign_in

urlpatterns = [
    path("admin/login/", admin_sign_in, name="admin-login"),
    path("admin/", admin.site.urls),
    path("api/v1/", include("arena.api.urls")),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("files/videos/upload/<str:token>/", files.video_upload, name="video-file-upload"),
    path("files/videos/<str:token>/", files.video_download, name="video-file-download"),
    path("api/docs/", SpectacularSwaggerSplitView.as_view(url_name="api-schema"), name="api-docs"),
    path("healthz", health.healthz, name="healthz"),
    path("favicon.ico", RedirectView.as_view(url=static("arena/favicon.svg"), permanent=True)),
    path("metrics", metrics.metrics, name="metrics"),
    path("", include("arena.web.urls")),
]

handler404 = "arena.middleware.not_found"
handler500 = "arena.middleware.server_error"
