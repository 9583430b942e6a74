"""The shell side of runners whose sessions are containers reached by exec (Docker, Kubernetes).

Both runners keep their session containers alive, read and write the workspace and open terminals
with the same small POSIX sh scripts, so a lab behaves the same on either. The scripts take the
target path as "$1" (bound to $p by CONFINE), never spliced into the script text.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from runners.base import ExecResult, FileEntry, RunnerError

# Keeps the container alive and exits at once on SIGTERM, so stops are fast.
KEEPALIVE = ["/bin/sh", "-c", "trap 'exit 0' TERM INT; while :; do sleep 3600 & wait $!; done"]
# A host of a session with several hosts, where the runner cannot run the image's own CMD as its main
# process (Kubernetes): the image's sshd, when it has one, with fresh host keys (as labs/killercoda's
# labs-host-init does on Docker), then KEEPALIVE. sshd detaches; a failure to start it is said in the
# container's log, and connect_hosts then reports that the host does not answer over SSH.
SSHD_KEEPALIVE = ["/bin/sh", "-c",
                  "if [ -x /usr/sbin/sshd ]; then mkdir -p /run/sshd && ssh-keygen -A >/dev/null && "
                  "/usr/sbin/sshd || echo 'labs: sshd did not start' >&2; fi; " + KEEPALIVE[2]]
# Everything the platform starts in a session (commands, shells) offers itself to the OOM killer
# first, so a memory hog never takes the container's init or keep-alive down with it. Raising
# one's own oom_score_adj needs no capability; lowering it below the container's would.
OOM_FIRST = "echo 500 >/proc/self/oom_score_adj 2>/dev/null; "
# What root in a session may do after every other capability is dropped (files, users, signals).
DEFAULT_CAPS = ["CHOWN", "DAC_OVERRIDE", "FOWNER", "KILL", "SETUID", "SETGID"]

# The deepest existing ancestor (or the path itself, symlinks followed) must resolve inside.
CONFINE = (
    'p="$1"; d="$p"; while [ ! -e "$d" ] && [ ! -L "$d" ]; do d=$(dirname "$d"); done; '
    'r=$(realpath "$d" 2>/dev/null) || { echo "outside the workspace" >&2; exit 3; }; '
    'case "$r" in /workspace|/workspace/*) ;; *) echo "outside the workspace" >&2; exit 3;; esac; '
)

# One record per entry, each ended by a NUL byte, the name last: a file name (which may hold "|" or
# newlines, but never NUL) can neither break the listing nor forge another entry.
LIST_SCRIPT = (
    '[ -d "$p" ] || { echo "not a directory" >&2; exit 4; }; '
    'for f in "$p"/* "$p"/.[!.]* "$p"/..?*; do [ -e "$f" ] || [ -L "$f" ] || continue; '
    "stat -c '%F|%s|%Y|%n' \"$f\" && printf '\\0'; done"
)

# Replace atomically, keeping the mode of a file that already exists (scripts stay executable).
# The temporary file gets a name nobody can guess or make beforehand (mktemp creates it with
# O_EXCL, never through a symlink), and mv renames over a symlink instead of following it.
WRITE_SCRIPT = (
    '[ ! -d "$p" ] || { echo "is a directory" >&2; exit 4; }; '
    'm=$(stat -c %a "$p" 2>/dev/null) || m=$(printf %o $((0666 & ~$(umask)))); d=$(dirname "$p"); '
    'mkdir -p "$d" && t=$(mktemp "$d/.labs-save.XXXXXX") && '
    '{ cat > "$t" && chmod "$m" "$t" && mv -fT "$t" "$p" || { rm -f "$t"; exit 1; }; }'
)


def read_script(max_bytes: int) -> str:
    """Print a regular file (symlinks followed, confined by CONFINE) of at most ``max_bytes``."""
    return ('[ -f "$p" ] || { echo "no such file" >&2; exit 4; }; '
            f'[ "$(stat -L -c %s "$p")" -le {int(max_bytes)} ] || {{ echo "larger than {int(max_bytes)} bytes" '
            '>&2; exit 5; }; cat "$p"')


def terminal_name(name: str) -> str:
    """A terminal's name as tmux may take it (letters, digits, - and _; "1" if nothing is left)."""
    return "".join(c for c in name if c.isalnum() or c in "-_")[:32] or "1"


def tmux_probe(name: str) -> str:
    """Exits 0 only when a re-attachable tmux session for this terminal exists."""
    return f"command -v tmux >/dev/null 2>&1 && tmux has-session -t '=term-{terminal_name(name)}' 2>/dev/null"


def terminal_shell(name: str, workdir: str = "") -> str:
    """A per-terminal tmux session that survives reconnects; a login bash (or sh) where there is no tmux."""
    cd = f"cd {workdir} 2>/dev/null; " if workdir else ""
    return (
        OOM_FIRST + cd + f"if command -v tmux >/dev/null 2>&1; then exec tmux -u new-session -A "
        f"-s term-{terminal_name(name)} \\; set-option -g status off; fi; "
        "if command -v bash >/dev/null 2>&1; then exec bash -l; fi; exec sh -l"
    )


def parse_listing(raw: bytes, workspace: str) -> list[FileEntry]:
    """Entries from LIST_SCRIPT's NUL-ended `stat -c '%F|%s|%Y|%n'` records, directories first."""
    entries = []
    prefix = workspace + "/"
    for record in raw.split(b"\0"):
        record = record.lstrip(b"\n")  # stat ends each record with a newline before the NUL
        if not record:
            continue
        try:
            kind, size, mtime, name = record.decode(errors="replace").split("|", 3)
            entries.append(FileEntry(name.removesuffix("\n").removeprefix(prefix), kind == "directory",
                                     int(size), float(mtime)))
        except ValueError as exc:
            raise RunnerError(f"unreadable file listing from the session ({exc})") from exc
    return sorted(entries, key=lambda e: (not e.is_dir, e.path))


# Several hosts in one session: the learner's user on the first host may `ssh <host>` to the others.
# Run on the first host as the learner: a key pair once, hosts trusted on first use, the public key
# printed. 127: no ssh-keygen in the image.
SSH_KEY_SCRIPT = r"""
command -v ssh-keygen >/dev/null || exit 127
set -e
umask 077
mkdir -p "$HOME/.ssh"
[ -f "$HOME/.ssh/id_ed25519" ] || ssh-keygen -q -t ed25519 -N '' -C labs-session -f "$HOME/.ssh/id_ed25519"
grep -qs 'labs-session' "$HOME/.ssh/config" || printf '%s\n' '# labs-session' 'Host *' \
    '  StrictHostKeyChecking accept-new' '  LogLevel ERROR' >> "$HOME/.ssh/config"
cat "$HOME/.ssh/id_ed25519.pub"
"""
# Run on another host as the learner, the public key on standard input.
SSH_TRUST_SCRIPT = r"""
set -e
umask 077
key=$(cat)
mkdir -p "$HOME/.ssh"
grep -qxF "$key" "$HOME/.ssh/authorized_keys" 2>/dev/null || printf '%s\n' "$key" >> "$HOME/.ssh/authorized_keys"
"""
# Run on the first host as the learner: until `ssh HOST true` works (its sshd is up), or time is up.
SSH_WAIT_SECONDS = 30
SSH_WAIT_SCRIPT = f"""
end=$(( $(date +%s) + {SSH_WAIT_SECONDS} ))
until ssh -o BatchMode=yes -o ConnectTimeout=3 "$1" true; do
  [ "$(date +%s)" -lt "$end" ] || exit 1
  sleep 0.2
done
"""

#: run(host, command, stdin, timeout): a command as the learner on one host of the session ("": the first).
HostCommand = Callable[[str, list[str], bytes | None, float], ExecResult]


def connect_hosts(run: HostCommand, others: Iterable[str]) -> None:
    """Let the learner's user on the first host `ssh <host>` to each of the `others` with no prompt: one
    key pair made on the first host, its public half authorized on every other. Done once `ssh <host>`
    works from the first host (a host's sshd makes its keys first: the learner's first try must not be
    refused). An image without ssh-keygen is left as it is: its hosts still reach each other by name."""
    made = run("", ["sh", "-c", SSH_KEY_SCRIPT], None, 30)
    if made.exit_code == 127:
        return
    if not made.ok or not made.stdout.startswith(b"ssh-"):
        raise RunnerError("cannot make the session's SSH key: "
                          f"{(made.stderr or made.stdout).decode(errors='replace').strip()[-300:]}")
    hosts = list(others)
    for host in hosts:
        trusted = run(host, ["sh", "-c", SSH_TRUST_SCRIPT], made.stdout, 30)
        if not trusted.ok:
            raise RunnerError(f"cannot let the first host into {host} over SSH: "
                              f"{trusted.stderr.decode(errors='replace').strip()[-300:]}")
    for host in hosts:
        waited = run("", ["sh", "-c", SSH_WAIT_SCRIPT, "labs-ssh-wait", host], None, SSH_WAIT_SECONDS + 5)
        if not waited.ok:
            raise RunnerError(f"{host} does not answer over SSH: "
                              f"{(waited.stderr or waited.stdout).decode(errors='replace').strip()[-300:]}")
