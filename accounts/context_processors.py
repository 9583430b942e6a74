from django.http import HttpRequest

from accounts.models import SiteAppearance


def appearance(request: HttpRequest) -> dict[str, object]:
    return {"appearance": SiteAppearance.load()}
