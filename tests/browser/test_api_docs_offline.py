"""The API docs page renders every operation with the network cut off: Swagger UI comes from the pinned
drf-spectacular-sidecar package, served by the arena itself, never from a CDN, and runs under the site's CSP;
the admin runs under the CSP too."""

from __future__ import annotations

from tests.browser.conftest import screenshot
from tests.web.conftest import PASSWORD, person


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


def test_the_admin_runs_under_the_content_security_policy(page, live_server, transactional_db):
    root = person("root", staff=True)
    root.is_superuser = True
    root.save()
    problems: list[str] = []
    # Every console error counts, the browser's own request for /favicon.ico included (it redirects to the SVG).
    page.on("console", lambda message: problems.append(message.text) if message.type == "error" else None)
    page.goto("/admin/login/")
    page.fill("#id_username", "root")
    page.fill("#id_password", PASSWORD)
    page.click("input[type=submit]")
    page.wait_for_url("**/admin/")
    page.goto("/admin/arena/policy/add/")
    page.wait_for_selector("#policy_form")
    assert "script-src 'self'" in page.request.get("/admin/").headers["content-security-policy"]
    assert problems == []  # a blocked inline script or style would show here
