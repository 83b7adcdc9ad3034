"""The conditions of a run: what was imposed on the child, and what it ran in.

Owns: the report's ``conditions`` section (the platform preset and its source,
the limits and where each came from, the network, the env file, what
``--clean-env`` kept and removed) and its lines for the start of the run; and
the ``environment`` section (the child's variable names with a fingerprint of
each value, the interpreter, the kernel, the cgroup), which lets ``compare``
say how two runs differed.
Must not know: the loop, the report's other fields, or how it is shown.

Values never leave: a variable is named, and its value is kept only as a
fingerprint: an HMAC under ``SUPERVISOR_COMPARE_KEY`` when the user gives the
same key to both runs, else only its length and whether it is empty.
"""

from __future__ import annotations

import os
import sys

from .config import seconds_text

# Cheap to import (no typing, hashlib or hmac at run time): the loop may say
# the conditions as soon as the child is spawned.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any, Mapping, Optional, Sequence

    from .config import Config

COMPARE_KEY_ENV = "SUPERVISOR_COMPARE_KEY"
# Hex digits of an HMAC kept: 64 bits tell values apart and reveal nothing.
FINGERPRINT_DIGITS = 16
# Names shown in a line before "and N more".
NAMES_SHOWN = 12
# The supervisor's own settings are not the app's environment.
_OWN_PREFIX = "SUPERVISOR_"
_MIB = 1024 * 1024
_PRESET_FIELDS = {
    "memory_limit": "memory",
    "cpu_limit": "CPU",
    "health_check": "health check",
    "startup_timeout_s": "start-up deadline",
    "stop_timeout_s": "stop grace",
}


def conditions(
    config: Config,
    caller_env: Mapping[str, str],
    child_env: Mapping[str, str],
    file_values: Optional[Mapping[str, str]] = None,
) -> dict[str, Any]:
    """What this run imposed, for the report; names of variables, never their values.

    ``caller_env`` is the supervisor's own environment, ``child_env`` what the
    child was given, ``file_values`` the env file's variables when there was one.
    """
    platform: Optional[dict[str, Any]] = None
    if config.platform_name is not None:
        from .platforms import get_platform

        preset = get_platform(config.platform_name)
        platform = {
            "name": preset.name,
            "title": preset.title,
            "source": preset.source,
            "from_preset": list(config.from_preset),
        }
    env_file: Optional[dict[str, Any]] = None
    if config.env_file is not None:
        env_file = {"path": config.env_file, "variables": len(file_values or {})}
    clean: Optional[dict[str, Any]] = None
    if config.clean_env:
        from .envfile import kept_by_clean_env

        clean = {
            "kept": sorted(n for n in caller_env if kept_by_clean_env(n) and n in child_env),
            "removed": sorted(
                n for n in caller_env if n not in child_env and not n.startswith(_OWN_PREFIX)
            ),
        }
    spec = config.health_check
    return {
        "platform": platform,
        "limits": {"memory_bytes": config.memory_limit, "cpus": config.cpu_limit},
        "network": "cut" if config.no_network else "open",
        "env_file": env_file,
        "clean_env": clean,
        "health_check": spec.describe() if spec is not None else None,
        "startup_timeout_s": config.startup_timeout_s,
        "stop_timeout_s": config.stop_timeout_s,
    }


def imposes_anything(section: Mapping[str, Any]) -> bool:
    """Whether the run reproduced anything (and the start should say what)."""
    limits = section.get("limits") or {}
    return bool(
        section.get("platform") or section.get("env_file") or section.get("clean_env")
        or section.get("health_check") or section.get("network") == "cut"
        or limits.get("memory_bytes") is not None or limits.get("cpus") is not None
    )


def condition_lines(section: Mapping[str, Any]) -> list[str]:
    """The conditions in words, one line each, for the start of the run; [] when none."""
    if not imposes_anything(section):
        return []
    platform = section.get("platform")
    preset: set[str] = set(platform["from_preset"]) if platform else set()
    lines: list[str] = []
    if platform:
        filled = [_PRESET_FIELDS[f] for f in platform["from_preset"] if f in _PRESET_FIELDS]
        line = f"reproducing {platform['title']} (--platform {platform['name']})"
        if filled:
            line += f": {', '.join(filled)} from its documented defaults"
        lines.append(f"{line} ({platform['source']})" if platform["source"] else line)
    limits = section.get("limits") or {}
    shown: list[str] = []
    if limits.get("memory_bytes") is not None:
        where = "preset" if "memory_limit" in preset else "--memory-limit"
        shown.append(f"memory {_mib(limits['memory_bytes'])} ({where})")
    if limits.get("cpus") is not None:
        where = "preset" if "cpu_limit" in preset else "--cpu-limit"
        shown.append(f"CPU {limits['cpus']:g} ({where})")
    lines.append("limits: " + (", ".join(shown) if shown else "none"))
    if section.get("network") == "cut":
        lines.append("network: cut (--no-network): the child has loopback only")
    else:
        lines.append("network: open")
    env_file = section.get("env_file")
    if env_file:
        count = env_file["variables"]
        lines.append(f"env file: {env_file['path']} ({count} variable{'s' * (count != 1)})")
    clean = section.get("clean_env")
    if clean:
        kept = ", ".join(clean["kept"]) or "nothing"
        removed = clean["removed"]
        lines.append(
            f"--clean-env: kept {kept} from this environment, as an image keeps them; "
            f"removed {len(removed)} variable{'s' * (len(removed) != 1)}"
            + (f": {_names(removed)}" if removed else "")
        )
    check = section.get("health_check")
    if check:
        whose = f" ({platform['title']}'s)" if platform and "health_check" in preset else ""
        lines.append(f"health check: {check}{whose}")
    timeout = section.get("startup_timeout_s")
    if timeout is not None and "startup_timeout_s" in preset:
        lines.append(f"start-up deadline: {seconds_text(timeout)} (preset)")
    return lines


def _mib(value: int) -> str:
    return f"{value / _MIB:g} MiB"


def _names(names: Sequence[str]) -> str:
    if len(names) <= NAMES_SHOWN:
        return ", ".join(names)
    return f"{', '.join(names[:NAMES_SHOWN])} and {len(names) - NAMES_SHOWN} more"


# -- the environment, for comparing runs -------------------------------------------


def fingerprint(value: str, key: Optional[bytes]) -> dict[str, Any]:
    """What a report keeps of a value: an HMAC under ``key``, else its length and emptiness."""
    if key:
        import hashlib
        import hmac

        digest = hmac.new(key, value.encode("utf-8", "surrogateescape"), hashlib.sha256)
        return {"hmac": digest.hexdigest()[:FINGERPRINT_DIGITS]}
    return {"length": len(value), "empty": not value}


def key_id(key: Optional[bytes]) -> Optional[str]:
    """Tells whether two reports were made under the same key, without revealing it."""
    if not key:
        return None
    import hashlib
    import hmac

    return hmac.new(key, b"supervisor compare key", hashlib.sha256).hexdigest()[:8]


def environment_section(
    child_env: Mapping[str, str],
    caller_env: Mapping[str, str],
    argv: Sequence[str],
    cgroup_version: Optional[int] = None,
) -> dict[str, Any]:
    """Names and fingerprints of the child's variables, its interpreter, the kernel, the cgroup.

    The key is ``SUPERVISOR_COMPARE_KEY`` from ``caller_env``.
    """
    raw_key = caller_env.get(COMPARE_KEY_ENV)
    key = raw_key.encode("utf-8", "surrogateescape") if raw_key else None
    from .cgroups import cpu_quota

    return {
        "variables": {
            name: fingerprint(value, key)
            for name, value in sorted(child_env.items())
            if name != COMPARE_KEY_ENV
        },
        "key_id": key_id(key),
        "interpreter": interpreter(argv, child_env.get("PATH")),
        "kernel": os.uname().release if hasattr(os, "uname") else sys.platform,
        "cgroup": {"version": cgroup_version, "cpu_quota": cpu_quota()},
    }


def interpreter(argv: Sequence[str], path: Optional[str]) -> Optional[dict[str, Any]]:
    """The Python that runs the command (itself, or a script's shebang), and its version."""
    from .importprofile import is_python_name, resolve_command

    if not argv:
        return None
    found = resolve_command(argv[0], path)
    if found is None:
        return None
    program: Optional[str] = found
    if not is_python_name(os.path.realpath(found)):
        program = _shebang_program(found, path)
    if program is None:
        return None
    real = os.path.realpath(program)
    return {"path": program, "version": _version(program, real)}


def _shebang_program(script: str, path: Optional[str]) -> Optional[str]:
    from .importprofile import is_python_name, resolve_command

    try:
        with open(script, "rb") as f:
            head = f.read(512)
    except OSError:
        return None
    if not head.startswith(b"#!"):
        return None
    words = head.split(b"\n", 1)[0][2:].decode("utf-8", "replace").split()
    if words and os.path.basename(words[0]) == "env":
        words = [w for w in words[1:] if not w.startswith("-")]
        return resolve_command(words[0], path) if words and is_python_name(words[0]) else None
    return words[0] if words and is_python_name(words[0]) else None


def _version(program: str, real: str) -> Optional[str]:
    """Exact for the supervisor's own interpreter; else a venv's pyvenv.cfg; else the name's."""
    if real == os.path.realpath(sys.executable):
        return sys.version.split()[0]
    config = os.path.join(os.path.dirname(os.path.dirname(program)), "pyvenv.cfg")
    try:
        with open(config) as f:
            for line in f:
                name, _, value = line.partition("=")
                if name.strip() in ("version", "version_info"):
                    return value.strip()
    except OSError:
        pass
    name = os.path.basename(real)  # python3.11, pypy3
    first_digit = next((i for i, c in enumerate(name) if c.isdigit()), len(name))
    return name[first_digit:] or None
