"""Release pages: the list of versioned public releases, one release's manifest and layout, and its downloads
(short-lived storage URLs: presigned S3 links or signed local ones, never streamed through the web process)."""

from __future__ import annotations

from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.views.decorators.http import require_GET

from arena.models import Release
from arena.services.releases import archive_key, release_files
from arena.storage import get_storage
from arena.web.render import render_page


def _ready(version: int) -> Release:
    release = (
        Release.objects.filter(version=version, state=Release.State.READY).select_related("snapshot").first()
    )
    if release is None:
        raise Http404("No such release.")
    return release


@require_GET
def release_list(request: HttpRequest) -> HttpResponse:
    releases = Release.objects.filter(state=Release.State.READY).select_related("snapshot")[:100]
    return render_page(request, "arena/releases.html", {"releases": releases})


@require_GET
def release_page(request: HttpRequest, version: int) -> HttpResponse:
    release = _ready(version)
    return render_page(request, "arena/release.html", {"release": release, "files": release_files(release)})


@require_GET
def release_file(request: HttpRequest, version: int, path: str) -> HttpResponse:
    release = _ready(version)
    if not any(f["path"] == path for f in release.manifest.get("files", [])) and path != "manifest.json":
        raise Http404("No such file in this release.")
    url, _ = get_storage().download_url(key=release.prefix + path)
    return HttpResponseRedirect(url)


@require_GET
def release_archive(request: HttpRequest, version: int) -> HttpResponse:
    url, _ = get_storage().download_url(key=archive_key(_ready(version).version))
    return HttpResponseRedirect(url)
