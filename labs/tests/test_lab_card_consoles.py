"""Lab cards (and the lab page) name what a session of the lab really offers: its consoles, the
web preview when it exposes ports, the Docker engine with docker_access, a VM when its image is one.

On the demo catalog as `import_lab` imports it, and on labs made for each combination.
"""

from __future__ import annotations

import re

import pytest
from django.conf import settings
from django.core.management import call_command
from django.urls import reverse

from labs.models import Image, Lab

pytestmark = pytest.mark.django_db


def card_consoles(page: str, title: str) -> list[str]:
    """The console chips of the card titled `title`, in order."""
    cards = page.split("data-lab-card>")[1:]
    [card] = [c for c in cards if f'class="card-link">{title}</a>' in c]
    return re.findall(r'<span class="console-chip console-[a-z]+"[^>]*>([^<]+)</span>', card)


def lab_page_consoles(client, lab: Lab) -> str:
    page = client.get(lab.get_absolute_url()).content.decode()
    match = re.search(r"<dd data-lab-consoles>(.*?)</dd>", page, re.S)
    return match.group(1) if match else ""


def test_the_demo_catalogs_cards_name_preview_docker_engine_and_vm(client):
    call_command("import_lab", str(settings.LAB_DEMO_CATALOG), verbosity=0)
    page = client.get(reverse("labs:catalog")).content.decode()

    assert card_consoles(page, "Linux shell basics") == ["Terminal", "Editor"]
    assert card_consoles(page, "Dockerfile 3: a multi-stage build under 250 MB") == [
        "Terminal", "Editor", "Web preview", "Docker engine"]
    assert card_consoles(page, "A tiny Linux virtual machine") == ["Desktop", "Terminal", "VM"]
    multistage = Lab.objects.get(slug="dockerfile-3-multistage")
    assert lab_page_consoles(client, multistage) == (
        "Terminal, Editor, Web preview (port 8080), Docker engine of its own")


@pytest.mark.parametrize(("fields", "vm", "expected"), [
    ({"consoles": ["terminal"]}, False, ["Terminal"]),
    ({"consoles": ["vnc"], "exposed_ports": [8080, 3000]}, False, ["Desktop", "Web preview"]),
    ({"consoles": [], "exposed_ports": [80]}, False, ["Web preview"]),
    ({"consoles": ["terminal", "editor"], "docker_access": True}, False, ["Terminal", "Editor", "Docker engine"]),
    ({"consoles": ["terminal", "vnc"]}, True, ["Terminal", "Desktop", "VM"]),
], ids=["terminal-only", "desktop-and-preview", "preview-only", "docker", "vm"])
def test_a_card_names_exactly_what_the_lab_offers(client, fields, vm, expected):
    kind = Image.Kind.VM if vm else Image.Kind.CONTAINER
    image = Image.objects.create(name=f"img-{kind}", kind=kind, reference="labs/busybox:latest")
    lab = Lab.objects.create(slug="offers", title="What it offers", image=image, published=True, **fields)

    page = client.get(reverse("labs:catalog")).content.decode()

    assert card_consoles(page, lab.title) == expected
