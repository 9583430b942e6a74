"""Bodies that are not what an endpoint takes: 400 for what is not JSON, 422 for JSON of the wrong shape,
each with a body that says what is wrong; never a 500, never a change."""

from __future__ import annotations

import pytest

from sessions_app.models import Session


@pytest.mark.parametrize("raw,says", [
    (b"{not json", "The request body must be JSON: Expecting property name enclosed in double quotes (line 1"),
    (b"\xff\xfe", "The request body must be JSON: not UTF-8 text"),
    (b'{"lab": NaN}', "The request body must be JSON: NaN is not a JSON value"),
    (b'{"lab": ' + b"[" * 50 + b"]" * 50 + b"}", "The request body must be JSON: nested more than 8 levels deep"),
])
def test_a_body_that_is_not_json_is_400_saying_why(owner_api, lab, raw, says):
    response = owner_api.post("/sessions", raw=raw)
    assert response.status_code == 400
    assert response.json()["detail"].startswith(says)
    assert not Session.objects.exists()


@pytest.mark.parametrize("body,field", [({}, "lab"), ({"lab": 5}, "lab"), ({"lab": ""}, "lab"), ([1], None)])
def test_json_of_the_wrong_shape_is_422_naming_the_field(owner_api, lab, body, field):
    response = owner_api.post("/sessions", body)
    assert response.status_code == 422
    errors = response.json()["detail"]
    assert errors and all(error["msg"] for error in errors)
    if field:
        assert errors[0]["loc"][-1] == field
    assert not Session.objects.exists()


def test_a_check_with_a_step_that_is_not_a_number_is_422(owner_api, running):
    response = owner_api.post(f"/sessions/{running.pk}/checks", {"step": "first"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "step"


def test_a_limit_out_of_range_is_422(owner_api, lab):
    assert owner_api.get("/labs", limit=0).status_code == 422
    assert owner_api.get("/labs", offset=-1).status_code == 422


def test_a_wrong_method_is_405_not_500(owner_api, running):
    response = owner_api.client.delete(f"/api/v1/sessions/{running.pk}",
                                       headers={"Authorization": f"Bearer {owner_api.token}"})
    assert response.status_code == 405
    assert owner_api.get(f"/sessions/{running.pk}/stop").status_code == 405


def test_numbers_past_what_the_database_takes_are_422_not_500(owner_api, running):
    assert owner_api.get("/labs", offset=10**24).status_code == 422
    assert owner_api.get(f"/sessions/{running.pk}/attempts/{10**20}").status_code == 422
    assert owner_api.get("/labs", limit=10**12).status_code == 200  # clamped to a page of 200


@pytest.mark.parametrize("slug", ["hello\x00shell", "../etc", "hello shell"])
def test_a_lab_that_is_no_slug_is_422_not_500(owner_api, lab, slug):
    # Found by the schema fuzzer: PostgreSQL refuses a NUL byte in a text comparison (a 500 then).
    response = owner_api.post("/sessions", {"lab": slug})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == "lab"
    assert not Session.objects.exists()


@pytest.mark.parametrize("param", ["lab", "user"])
def test_staff_filters_with_a_nul_byte_are_422_not_500(staff_api, param):
    response = staff_api.get("/staff/sessions", **{param: "a\x00b"})
    assert response.status_code == 422
    assert response.json()["detail"][0]["loc"][-1] == param
