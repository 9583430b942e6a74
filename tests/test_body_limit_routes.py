"""Which routes take bodies larger than the default, and for whom (webserver/body_limits.py)."""

from __future__ import annotations

from webserver.body_limits import LOGO_MAX_BYTES, MULTIPART_ALLOWANCE, Audience, default_limit, limit_for, route_limit


def test_the_site_logo_upload_takes_a_logo_from_staff_only():
    for path in (b"/admin/accounts/siteappearance/add/", b"/admin/accounts/siteappearance/1/change/"):
        route = route_limit(path)
        assert route.max_bytes == LOGO_MAX_BYTES + MULTIPART_ALLOWANCE and route.audience is Audience.STAFF
        assert limit_for(route, Audience.STAFF) == route
        assert limit_for(route, Audience.SIGNED_IN).max_bytes == default_limit().max_bytes


def test_other_routes_keep_the_default():
    assert route_limit(b"/") == default_limit()
    assert route_limit(b"/admin/auth/user/1/change/") == default_limit()
