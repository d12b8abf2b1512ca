#!/usr/bin/python3
"""The seccomp half of a systemd unit's sandbox, without systemd, for
deploy/check-systemd.sh (which also sets the unit's user, capabilities and
/proc mount with setpriv and unshare).

  sandbox.py allowlist UNIT
      the system calls UNIT's SystemCallFilter= lines allow, resolved the way
      systemd resolves them (@default is implied by an allow list; later
      `~` lines remove), from `systemd-analyze syscall-filter`
  sandbox.py exec UNIT ALLOWLIST -- COMMAND...
      loads seccomp filters as systemd would for UNIT (SystemCallFilter= with
      SystemCallErrorNumber=, RestrictAddressFamilies=, RestrictNamespaces=,
      MemoryDenyWriteExecute=, LockPersonality=), then execs COMMAND
  sandbox.py trace-check UNIT ALLOWLIST BINARY TRACE [WRITABLE...]
      reads an `strace -f` log and fails on any system call made by BINARY
      (from its execve on, children included) that the filter does not
      allow, any socket family RestrictAddressFamilies= does not allow, and
      any file opened for writing, created, renamed or removed outside the
      WRITABLE directories (ProtectSystem=strict makes the rest read-only)
  sandbox.py compare-snapshots REFERENCE CONFINED
      fails unless `reachmap-agent snapshot --format json` run in the
      sandbox read every part the unconfined (root) run read, with the same
      facts (volatile numbers aside)

Needs python3-seccomp (Debian) for `exec`; the other commands only read.
"""

import errno
import json
import os
import re
import socket
import subprocess
import sys


def unit_settings(path):
    """KEY -> [values, in order] of the [Service] section (no drop-ins)."""
    settings = {}
    section = None
    with open(path, encoding="utf-8") as f:
        for raw in f:
            line = raw.strip()
            if not line or line.startswith(("#", ";")):
                continue
            if line.startswith("["):
                section = line
                continue
            if section != "[Service]" or "=" not in line:
                continue
            key, value = line.split("=", 1)
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def syscall_groups():
    out = subprocess.run(
        ["systemd-analyze", "syscall-filter", "--no-pager"],
        check=True, capture_output=True, text=True,
    ).stdout
    groups, current = {}, None
    for line in out.splitlines():
        if line.startswith("@"):
            current = groups.setdefault(line.strip(), [])
        elif line.startswith("    ") and current is not None:
            item = line.strip()
            if item and not item.startswith("#"):
                current.append(item)
        else:
            current = None
    return groups


def expand(names, groups, seen=None):
    seen = set() if seen is None else seen
    out = set()
    for name in names:
        if name.startswith("@"):
            if name not in groups:
                raise SystemExit(f"unknown system call group {name}")
            if name in seen:
                continue
            seen.add(name)
            out |= expand(groups[name], groups, seen)
        else:
            out.add(name.split(":", 1)[0])
    return out


def allowlist(unit):
    lines = unit_settings(unit).get("SystemCallFilter", [])
    groups = syscall_groups()
    allowed, allow_list = None, None
    for value in lines:
        if value == "":
            allowed, allow_list = None, None
            continue
        invert = value.startswith("~")
        names = value.lstrip("~").split()
        if allowed is None:
            if invert:
                raise SystemExit(f"{unit}: a deny-list SystemCallFilter= is not supported here")
            allow_list = True
            # systemd adds @default to every allow list.
            allowed = expand(["@default"], groups)
        if invert:
            allowed -= expand(names, groups)
        else:
            allowed |= expand(names, groups)
    if not allow_list:
        raise SystemExit(f"{unit}: no SystemCallFilter= allow list")
    return sorted(allowed)


NAMESPACE_FLAGS = {
    "cgroup": 0x02000000, "ipc": 0x08000000, "net": 0x40000000, "mnt": 0x00020000,
    "pid": 0x20000000, "user": 0x10000000, "uts": 0x04000000,
}


def yes(settings, key):
    values = settings.get(key, [])
    return bool(values) and values[-1].lower() in ("yes", "true", "on", "1")


def address_families(settings):
    values = settings.get("RestrictAddressFamilies", [])
    if not values or values[-1] == "" or values[-1].startswith("~"):
        return None
    return {getattr(socket, name) for v in values for name in v.split()}


def exec_confined(unit, allow_file, command):
    import seccomp  # python3-seccomp

    settings = unit_settings(unit)
    err = settings.get("SystemCallErrorNumber", ["EPERM"])[-1]
    with open(allow_file, encoding="utf-8") as f:
        allowed = [l.strip() for l in f if l.strip()]

    # SystemCallFilter=: everything else fails with SystemCallErrorNumber=.
    # Only the native architecture: SystemCallArchitectures=native.
    calls = seccomp.SyscallFilter(defaction=seccomp.ERRNO(getattr(errno, err)))
    for name in allowed:
        try:
            calls.add_rule(seccomp.ALLOW, name)
        except (RuntimeError, ValueError, OSError):
            pass  # not a system call on this architecture
    filters = [calls]

    # RestrictAddressFamilies=: socket() with another family fails with
    # EAFNOSUPPORT (systemd blocks below the lowest, above the highest and
    # every gap in between).
    families = address_families(settings)
    if families is not None:
        af = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
        lo, hi = min(families), max(families)
        nope = seccomp.ERRNO(errno.EAFNOSUPPORT)
        af.add_rule(nope, "socket", seccomp.Arg(0, seccomp.LT, lo))
        af.add_rule(nope, "socket", seccomp.Arg(0, seccomp.GT, hi))
        for fam in range(lo + 1, hi):
            if fam not in families:
                af.add_rule(nope, "socket", seccomp.Arg(0, seccomp.EQ, fam))
        filters.append(af)

    other = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    used = False
    if yes(settings, "RestrictNamespaces"):
        # clone3() cannot be filtered by its flags: systemd makes it ENOSYS so
        # that libc falls back to clone().
        other.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")
        other.add_rule(seccomp.ERRNO(errno.EPERM), "setns")
        for flag in NAMESPACE_FLAGS.values():
            for call in ("unshare", "clone"):
                other.add_rule(seccomp.ERRNO(errno.EPERM), call,
                               seccomp.Arg(0, seccomp.MASKED_EQ, flag, flag))
        used = True
    if yes(settings, "MemoryDenyWriteExecute"):
        prot_wx = 0x2 | 0x4  # PROT_WRITE | PROT_EXEC
        other.add_rule(seccomp.ERRNO(errno.EPERM), "mmap",
                       seccomp.Arg(2, seccomp.MASKED_EQ, prot_wx, prot_wx))
        for call in ("mprotect", "pkey_mprotect"):
            other.add_rule(seccomp.ERRNO(errno.EPERM), call,
                           seccomp.Arg(2, seccomp.MASKED_EQ, 0x4, 0x4))
        other.add_rule(seccomp.ERRNO(errno.EPERM), "shmat",
                       seccomp.Arg(2, seccomp.MASKED_EQ, 0o100000, 0o100000))  # SHM_EXEC
        used = True
    if yes(settings, "LockPersonality"):
        other.add_rule(seccomp.ERRNO(errno.EPERM), "personality",
                       seccomp.Arg(0, seccomp.NE, 0))  # PER_LINUX
        used = True
    if used:
        filters.append(other)

    # The allow list last: it would refuse the seccomp() calls that load
    # the others. Nothing but execve() runs after it.
    for f in filters[1:] + filters[:1]:
        f.load()
    os.execv(command[0], command)


LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. ([a-z0-9_]+) resumed>|([a-z0-9_]+)\()")
WRITE_FLAGS = ("O_WRONLY", "O_RDWR", "O_CREAT", "O_TRUNC")
PATH_CALLS = {
    "mkdir": 0, "mkdirat": 1, "unlink": 0, "unlinkat": 1, "rmdir": 0,
    "rename": 0, "renameat": 1, "renameat2": 1, "creat": 0,
    "link": 1, "linkat": 3, "symlink": 1, "symlinkat": 2, "truncate": 0,
}


def trace_check(unit, allow_file, binary, trace, writable):
    settings = unit_settings(unit)
    with open(allow_file, encoding="utf-8") as f:
        allowed = {l.strip() for l in f if l.strip()}
    families = address_families(settings)
    family_names = {getattr(socket, n): n for n in sorted(dir(socket), reverse=True)
                    if n.startswith("AF_") and n != "AF_ROUTE"}
    writable = [os.path.join(os.path.realpath(w), "") for w in writable] + ["/dev/null"]

    started = False
    used, problems = {}, []
    with open(trace, encoding="utf-8", errors="replace") as f:
        for line in f:
            if not started:
                if re.match(rf'^\d+\s+execve\("{re.escape(binary)}",.*\) = 0', line):
                    started = True
                else:
                    continue
            m = LINE.match(line)
            if not m:
                continue
            name = m.group(2) or m.group(3)
            if m.group(3):
                used[name] = used.get(name, 0) + 1
            if m.group(3) and name not in allowed:
                problems.append(f"system call {name} is not allowed by SystemCallFilter=: {line.strip()}")
            if m.group(3) == "socket" and families is not None:
                fam = re.match(r"^\d+\s+socket\((AF_[A-Z0-9_]+|\d+)", line)
                if fam:
                    fam = fam.group(1)
                    num = getattr(socket, fam, None) if not fam.isdigit() else int(fam)
                    if num not in families:
                        problems.append(f"socket family {fam} is not in RestrictAddressFamilies=: {line.strip()}")
            path = None
            if m.group(3) in ("open", "openat", "openat2"):
                pm = re.search(r'"([^"]*)", ([A-Z_|0-9]+|\{flags=[A-Z_|0-9]+)', line)
                if pm and any(fl in pm.group(2) for fl in WRITE_FLAGS):
                    path = pm.group(1)
            elif m.group(3) in PATH_CALLS:
                paths = re.findall(r'"([^"]*)"', line)
                path = paths[-1] if paths else None
            if path is not None and "= -1 " not in line:
                if not path.startswith("/"):
                    problems.append(f"a relative path is written, check it by hand: {line.strip()}")
                elif not any(path == w.rstrip("/") or path.startswith(w) for w in writable):
                    problems.append(f"writes outside {', '.join(writable)}: {line.strip()}")
    if not started:
        problems.append(f"{trace}: no successful execve of {binary}")
    print(f"{len(used)} distinct system calls, {sum(used.values())} calls: "
          + " ".join(sorted(used)))
    if families is not None:
        print("address families allowed: "
              + " ".join(sorted(family_names.get(f, str(f)) for f in families)))
    for p in problems[:50]:
        print("PROBLEM: " + p)
    if len(problems) > 50:
        print(f"... and {len(problems) - 50} more problems")
    return 1 if problems else 0


def normalise(snapshot):
    s = json.loads(json.dumps(snapshot))
    host = s.get("host", {})
    for k in ("uptime_seconds", "boot_time_unix_seconds"):
        host.pop(k, None)
    res = s.get("resources")
    if isinstance(res, dict) and "error" not in res:
        s["resources"] = "read"

    def strip_counters(v):
        if isinstance(v, dict):
            return {k: strip_counters(x) for k, x in v.items() if k not in ("packets", "bytes", "counters")}
        if isinstance(v, list):
            return [strip_counters(x) for x in v]
        return v

    s["firewall"] = strip_counters(s.get("firewall"))
    return s


def compare_snapshots(reference, confined):
    with open(reference, encoding="utf-8") as f:
        ref = json.load(f)
    with open(confined, encoding="utf-8") as f:
        got = json.load(f)
    problems = []
    for part, value in got.items():
        if isinstance(value, dict) and set(value) == {"error"}:
            problems.append(f"{part}: unreadable in the sandbox: {value['error']}")
    ref_events, got_events = ref.get("kernel_events"), got.get("kernel_events")
    if isinstance(ref_events, list) and isinstance(got_events, list):
        # Messages logged between the two runs, or rotated out, are not a loss.
        lo = max(min((e["seq"] for e in ref_events), default=0), min((e["seq"] for e in got_events), default=0))
        hi = min(max((e["seq"] for e in ref_events), default=0), max((e["seq"] for e in got_events), default=0))
        pick = lambda evs: [(e["seq"], json.dumps(e["kind"], sort_keys=True)) for e in evs if lo <= e["seq"] <= hi]
        if pick(ref_events) != pick(got_events):
            problems.append("kernel_events: the sandboxed run read other kernel messages than root")
        print(f"kernel_events: {len(got_events)} read in the sandbox, {len(ref_events)} as root")
    ref_n, got_n = normalise(ref), normalise(got)
    ref_n.pop("kernel_events", None)
    got_n.pop("kernel_events", None)
    for part in sorted(set(ref_n) | set(got_n)):
        if ref_n.get(part) != got_n.get(part):
            a = json.dumps(ref_n.get(part), sort_keys=True)
            b = json.dumps(got_n.get(part), sort_keys=True)
            problems.append(f"{part} differs from root's reading:\n  root:    {a[:600]}\n  sandbox: {b[:600]}")
    fw = got.get("firewall", {})
    socks = got.get("sockets", {})
    print("firewall backends: " + ", ".join(fw.get("backends", [])) +
          f"; {len(fw.get('tables', []))} tables; listeners: {len(socks.get('listeners', []))}, "
          f"{sum(1 for l in socks.get('listeners', []) if l.get('processes'))} with their process")
    for p in problems:
        print("PROBLEM: " + p)
    return 1 if problems else 0


def main(argv):
    if len(argv) >= 3 and argv[1] == "allowlist":
        print("\n".join(allowlist(argv[2])))
        return 0
    if len(argv) >= 6 and argv[1] == "exec" and argv[4] == "--":
        exec_confined(argv[2], argv[3], argv[5:])
    if len(argv) >= 6 and argv[1] == "trace-check":
        return trace_check(argv[2], argv[3], argv[4], argv[5], argv[6:])
    if len(argv) == 4 and argv[1] == "compare-snapshots":
        return compare_snapshots(argv[2], argv[3])
    print(__doc__, file=sys.stderr)
    return 2


if __name__ == "__main__":
    sys.exit(main(sys.argv))
