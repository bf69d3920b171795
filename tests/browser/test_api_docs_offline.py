"""The API docs page renders every operation with the network cut off: Swagger UI comes from the pinned
drf-spectacular-sidecar package, served by the arena itself, never from a CDN, and runs under the site's CSP."""

from __future__ import annotations

from tests.browser.conftest import screenshot


def test_api_docs_render_operations_offline(page, live_server, transactional_db):
    outside: list[str] = []

    def only_the_arena(route) -> None:
        if route.request.url.startswith(live_server.url):
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    page.context.route("**/*", only_the_arena)
    problems: list[str] = []
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.on("pageerror", lambda error: problems.append(str(error)))

    page.goto("/api/docs/")
    page.wait_for_selector(".opblock-summary-path", timeout=60_000)

    paths = page.eval_on_selector_all(".opblock-summary-path", "nodes => nodes.map(n => n.dataset.path)")
    assert "/api/v1/sessions/" in paths and "/api/v1/leaderboard/" in paths
    assert len(paths) >= 20
    assert outside == []
    assert problems == []
    screenshot(page, "api-docs-offline")
