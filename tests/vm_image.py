"""The test VM for QEMU tests: built once per machine, cached outside the repository.

    from tests.vm_image import vm_image  # the fixture; the tests take it as an argument

`vm_image` runs deploy/images/vm/build-test-vm.sh (a no-op once built: the image lives in
/var/cache/labs-images/vm/testvm, or $LABS_VM_CACHE/testvm) and returns the image directory's
paths. A missing QEMU or a failed build fails the test: these tests never skip.

Also here: `build_boot_iso` (a tiny bootable ISO, made in Python) and `console_until` (drive
the serial console of a running VM until some output appears).
"""

from __future__ import annotations

import hashlib
import select
import shutil
import struct
import subprocess
import time
import uuid
from dataclasses import dataclass
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
BUILD_SCRIPT = ROOT / "deploy" / "images" / "vm" / "build-test-vm.sh"
SECTOR = 2048


@dataclass(frozen=True)
class VMImage:
    directory: Path
    disk: Path
    kernel: Path
    initrd: Path
    cmdline: str


def build_vm_image() -> VMImage:
    for tool in ("qemu-system-x86_64", "qemu-img"):
        if not shutil.which(tool):
            pytest.fail(f"{tool} is required for the VM tests (apt-get install qemu-system-x86 qemu-utils)")
    try:
        result = subprocess.run(["bash", str(BUILD_SCRIPT), "--print-dir"], capture_output=True, text=True,
                                timeout=600)
    except subprocess.TimeoutExpired:
        pytest.fail("building the test VM took more than 10 minutes")
    if result.returncode != 0:
        pytest.fail(f"building the test VM failed:\n{result.stderr[-3000:]}")
    directory = Path(result.stdout.strip().splitlines()[-1])
    return VMImage(
        directory=directory,
        disk=directory / "disk.qcow2",
        kernel=directory / "vmlinuz",
        initrd=directory / "initrd.img",
        cmdline=(directory / "cmdline").read_text().strip(),
    )


@pytest.fixture(scope="session")
def vm_image() -> VMImage:
    return build_vm_image()


def vm_spec(image, **fields):
    """A SessionSpec for a VM of `image` (a disk or ISO path): 128 MiB, no network, a new session id."""
    from runners.base import SessionSpec

    values = {"session_id": str(uuid.uuid4()), "user_id": 1, "username": "olivia", "lab_slug": "vm-lab",
              "image": str(image), "image_kind": "vm", "memory_mb": 128, "network_mode": "none"}
    values.update(fields)
    return SessionSpec(**values)


def vm_lab(vm_image: VMImage, runner: str, **fields):
    """A published lab of the test VM's disk on the runner `runner`: 128 MiB, bridge, VNC and terminal."""
    from labs.models import Image, Lab

    image = Image.objects.create(name="test-vm", kind=Image.Kind.VM, reference=str(vm_image.disk),
                                 disk_format=Image.DiskFormat.QCOW2)
    values = {"slug": "vm-lab", "title": "A VM", "image": image, "runner": runner, "memory_mb": 128,
              "network_mode": "bridge", "consoles": ["vnc", "terminal"], "published": True}
    values.update(fields)
    return Lab.objects.create(**values)


def serial_shell(runner, state, command: bytes, expect: bytes, timeout: float = 240) -> bytes:
    """Wait for the guest's shell on the serial console (a short probe, repeated until answered),
    then type `command` once: typing a long line again while the shell is busy would interleave."""
    terminal = runner.open_terminal(state)
    try:
        console_until(terminal, b"READY-42", send=b"echo READY-$((6*7))\n", timeout=timeout)
        terminal.write(command + b"\n")
        return console_until(terminal, expect, timeout=60)
    finally:
        terminal.close()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def console_until(terminal, needle: bytes, send: bytes | None = None, timeout: float = 120.0,
                  every: float = 2.0) -> bytes:
    """Read the serial console until `needle` appears, sending `send` every `every` seconds
    (input typed before the guest's shell is up is lost, so it is repeated)."""
    output = b""
    deadline = time.monotonic() + timeout
    last_sent = 0.0
    while needle not in output:
        now = time.monotonic()
        if now >= deadline:
            pytest.fail(f"{needle!r} did not appear on the serial console within {timeout:g} s; "
                        f"last output: {output[-400:]!r}")
        if send is not None and now - last_sent >= every:
            terminal.write(send)
            last_sent = now
        ready, _, _ = select.select([terminal], [], [], 0.2)
        if ready:
            chunk = terminal.read(65536)
            if not chunk:
                pytest.fail(f"the serial console closed before {needle!r} appeared: {output[-400:]!r}")
            output += chunk
    return output


def _boot_sector(message: bytes) -> bytes:
    """16-bit code the BIOS loads at 0x7c00: print `message` on COM1, wait a second (int 15h,
    ah=86h), repeat. Repeating means a console attached late still sees it. The text is found
    relative to the code (call/pop), whatever CS:IP the BIOS jumped to."""
    text_at = 37
    code = bytes([
        0xFB,                                 # sti
        0x0E, 0x1F,                           # push cs; pop ds
        0xE8, 0x00, 0x00,                     # call here
        0x5E,                                 # here: pop si (offset of here)
        0x83, 0xC6, text_at - 6,              # add si, text - here
        0x89, 0xF7,                           # mov di, si
        0x89, 0xFE,                           # again: mov si, di
        0xBA, 0xF8, 0x03,                     # mov dx, 0x3f8 (COM1)
        0xAC,                                 # next: lodsb
        0x84, 0xC0,                           # test al, al
        0x74, 0x03,                           # jz wait
        0xEE,                                 # out dx, al
        0xEB, 0xF8,                           # jmp next
        0xB4, 0x86,                           # wait: mov ah, 0x86
        0xB9, 0x0F, 0x00,                     # mov cx, 0x000f
        0xBA, 0x40, 0x42,                     # mov dx, 0x4240 (cx:dx = 1 000 000 us)
        0xCD, 0x15,                           # int 0x15
        0xEB, 0xE7,                           # jmp again
    ])
    assert len(code) == text_at
    return code + message + b"\0"


def build_boot_iso(path: Path, message: bytes = b"LABS ISO BOOTED\r\n") -> Path:
    """A minimal El Torito ISO (no-emulation boot) whose boot image prints `message` on the
    serial port: enough for SeaBIOS to boot it from the CD-ROM drive. No filesystem inside."""
    catalog_lba, image_lba = 19, 20  # after descriptors 16 (primary), 17 (boot), 18 (end)
    boot_record = bytearray(SECTOR)  # volume descriptor 17: the El Torito boot record
    boot_record[0:7] = b"\x00CD001\x01"
    boot_record[7:7 + 23] = b"EL TORITO SPECIFICATION"
    boot_record[0x47:0x4B] = struct.pack("<I", catalog_lba)
    terminator = bytearray(SECTOR)
    terminator[0:7] = b"\xffCD001\x01"
    validation = bytearray(32)
    validation[0] = 0x01  # header id; platform 0 = 80x86
    validation[4:4 + 10] = b"LABS TESTS"
    validation[30:32] = b"\x55\xaa"
    checksum = (-sum(struct.unpack("<16H", bytes(validation)))) & 0xFFFF  # all words sum to 0
    validation[28:30] = struct.pack("<H", checksum)
    default_entry = bytearray(32)
    default_entry[0] = 0x88  # bootable, no emulation, default load segment (07C0)
    default_entry[6:8] = struct.pack("<H", 4)  # 4 virtual 512-byte sectors
    default_entry[8:12] = struct.pack("<I", image_lba)
    catalog = bytes(validation + default_entry).ljust(SECTOR, b"\0")
    boot_image = _boot_sector(message).ljust(SECTOR, b"\0")
    primary = bytearray(SECTOR)  # volume descriptor 16: a bare primary descriptor
    primary[0:7] = b"\x01CD001\x01"
    data = bytes(16 * SECTOR) + bytes(primary) + bytes(boot_record) + bytes(terminator) + catalog + boot_image
    path.write_bytes(data.ljust(32 * SECTOR, b"\0"))
    return path
