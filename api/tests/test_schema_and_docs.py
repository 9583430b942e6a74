"""The published OpenAPI schema is valid OpenAPI 3 and lists every endpoint; the docs page works
under the site's Content-Security-Policy with the assets it ships (no CDN)."""

from __future__ import annotations

import re

from django.test import Client
from openapi_spec_validator import validate

from api.tests.conftest import API


def test_the_schema_is_valid_openapi_3_with_both_ways_in(db):
    response = Client().get(f"{API}/openapi.json")
    assert response.status_code == 200
    schema = response.json()
    validate(schema)
    assert schema["openapi"].startswith("3.")
    assert set(schema["components"]["securitySchemes"]) == {"BearerToken", "SessionCookie"}
    assert {
        "/api/v1/labs", "/api/v1/labs/{slug}", "/api/v1/sessions", "/api/v1/sessions/{session_id}",
        "/api/v1/sessions/{session_id}/extend", "/api/v1/sessions/{session_id}/stop",
        "/api/v1/sessions/{session_id}/checks", "/api/v1/sessions/{session_id}/attempts",
        "/api/v1/sessions/{session_id}/attempts/{attempt_id}", "/api/v1/staff/sessions",
        "/api/v1/staff/sessions/{session_id}/stop", "/api/v1/staff/attempts",
    } == set(schema["paths"])
    start = schema["paths"]["/api/v1/sessions"]["post"]
    assert set(start["responses"]) >= {"201", "404", "409", "503"}


def test_every_endpoint_requires_a_token_or_the_session_cookie(db):
    schema = Client().get(f"{API}/openapi.json").json()
    for path, operations in schema["paths"].items():
        for method, operation in operations.items():
            assert operation["security"] == [{"BearerToken": []}, {"SessionCookie": []}], (method, path)


def test_the_docs_page_loads_its_scripts_from_the_platform_under_the_csp(db):
    response = Client().get(f"{API}/docs")
    assert response.status_code == 200
    policy = response["Content-Security-Policy"]
    script_src = re.search(r"script-src ([^;]*)", policy).group(1).split()
    assert "'self'" in script_src and "'unsafe-inline'" not in script_src and "'unsafe-eval'" not in script_src
    page = response.content.decode()
    scripts = re.findall(r"<script([^>]*)>", page)
    sources = [re.search(r'src="([^"]+)"', attrs).group(1) for attrs in scripts if "src=" in attrs]
    assert sources == ["/static/ninja/swagger-ui-bundle.js", "/static/ninja/swagger-ui-init.js"]
    # The only inline script is a JSON data block, which browsers never run (so the CSP allows it).
    assert [attrs for attrs in scripts if "src=" not in attrs] == [' type="application/json" id="swagger-settings"']
    assert "cdn" not in page.lower()


def test_the_docs_page_sends_the_csrf_token_when_it_tries_an_endpoint(owner_client):
    page = owner_client.get(f"{API}/docs").content.decode()
    assert 'data-api-csrf="true"' in page
    assert re.search(r'data-csrf-token="[^"]{32,}"', page)
