"""What only staff may grant a lab, so that a lab file from outside cannot grant it itself.

A lab file (lab.yaml, a Killercoda scenario) describes what a session gets. Most of that only
shapes the session inside its confinement; these settings reach past it or take a large share
of the host, so importing a file that asks for them fails unless the operator passes
``import_lab --allow-privileged`` (saying they reviewed the file). Staff may set them in the
admin at any time. labs/LAB_FORMAT.md ("Privileged settings") is the reference.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from django.conf import settings

RESOURCE_FIELDS = ("cpu", "memory_mb", "pids_limit", "disk_mb")
# Lab fields that can hold a privilege, checked on every import.
FIELDS = ("network_mode", "runner", "docker_access", *RESOURCE_FIELDS)
UNRESTRICTED = "unrestricted"


@dataclass(frozen=True)
class Privilege:
    field: str  # a Lab field name
    value: Any
    reason: str


def shown(value: Any) -> str:
    return repr(value) if isinstance(value, str) else str(value)


def privilege(field: str, value: Any) -> Privilege | None:
    """The privilege ``value`` would grant as the lab's ``field``, or None when anyone may set it."""
    if field == "network_mode" and value == UNRESTRICTED:
        return Privilege(field, value, "sessions would reach private networks (the operator's LAN or cloud "
                                       "network), not only the internet")
    if field == "docker_access" and value is True and settings.LAB_ALLOW_UNSAFE_DIND:
        return Privilege(field, value, "with LAB_ALLOW_UNSAFE_DIND on, a Docker engine in a session may be one "
                                       "whose root is root on the host")
    if field == "runner":
        allowed: list[str] = list(settings.LAB_IMPORT_RUNNERS)
        if value not in allowed:
            return Privilege(field, value, f"lab files may choose only the runners in LAB_IMPORT_RUNNERS "
                                           f"({', '.join(allowed) or 'none'}); others may be set up with less "
                                           f"confinement for staff-written labs")
    if field in RESOURCE_FIELDS:
        limit = settings.LAB_IMPORT_RESOURCE_LIMITS[field]
        if Decimal(str(value)) > Decimal(str(limit)):
            return Privilege(field, value, f"more than the {limit} a lab file may ask for "
                                           f"(LAB_IMPORT_RESOURCE_LIMITS)")
    return None


def describe(found: Privilege) -> str:
    return f"{found.field} {shown(found.value)}"


def lab_privileges(fields: dict[str, Any]) -> list[Privilege]:
    """The privileges a set of Lab field values grants, in FIELDS order."""
    found = [privilege(name, fields[name]) for name in FIELDS if name in fields]
    return [item for item in found if item is not None]


VM_REFERENCE_REASON = ("a VM image's reference is a disk file on the server, which sessions would boot and read; "
                       "register disks with manage.py register_image")
