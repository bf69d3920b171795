"""The OpenAPI schema is served and validates without warnings."""

from io import StringIO

import pytest
from django.core.management import call_command


@pytest.mark.django_db
def test_schema_validates_without_warnings(tmp_path):
    out = tmp_path / "schema.yaml"
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(out), stderr=StringIO())
    text = out.read_text()
    for path in (
        "/api/v1/sessions/",
        "/api/v1/sessions/{session_id}/preference/",
        "/api/v1/policies/",
        "/api/v1/leaderboard/",
    ):
        assert path in text


def test_schema_and_docs_are_served(client):
    assert client.get("/api/schema/").status_code == 200
    assert client.get("/api/docs/").status_code == 200
