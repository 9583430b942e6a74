"""`{% load lab_consoles %}` then `{% for console in lab|consoles %}`: what a lab's session really
offers, in the order the session page shows it: its consoles, the web preview when it exposes
ports, the Docker engine with docker_access, and that it is a virtual machine when its image is one.
"""

from __future__ import annotations

from typing import NamedTuple

from django import template

from labs.models import Image, Lab

register = template.Library()


class Console(NamedTuple):
    key: str  # for the chip's class
    name: str  # on a card
    description: str  # on the lab page


CONSOLE_NAMES = {
    "terminal": ("Terminal", "Terminal"),
    "editor": ("Editor", "Editor"),
    "vnc": ("Desktop", "Desktop (graphical console, VNC)"),
}


@register.filter
def consoles(lab: Lab) -> list[Console]:
    found = [Console(kind, *CONSOLE_NAMES[kind]) for kind in lab.consoles if kind in CONSOLE_NAMES]
    if lab.exposed_ports:
        ports = ", ".join(str(port) for port in lab.exposed_ports)
        found.append(Console("preview", "Web preview", f"Web preview (port{'s' if len(lab.exposed_ports) > 1 else ''} "
                                                       f"{ports})"))
    if lab.docker_access:
        found.append(Console("docker", "Docker engine", "Docker engine of its own"))
    if lab.image.kind == Image.Kind.VM:
        found.append(Console("vm", "VM", "Virtual machine"))
    return found
