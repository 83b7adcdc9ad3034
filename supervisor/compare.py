"""``supervisor compare A.json B.json``: how two runs differ, from their reports.

Owns: reading two reports and setting side by side what explains a
difference between, say, the platform's run and a laptop's: the end (cause,
exit status, phase), the conditions (limits, network, platform, health
check, env file), the interpreter and kernel, the command, the variables
(names present in one only, and names whose values differ), the start-up
time and slowest imports, and the memory peak.
Must not know: how the reports were made. Values never appear: a report
holds only a fingerprint of each (see ``conditions``), and two values are
said to differ only when their fingerprints do.
"""

from __future__ import annotations

import json
from typing import Any, Mapping, Optional, Sequence

from .errors import UsageError

_MIB = 1024 * 1024
NAMES_SHOWN = 20
SLOWEST_SHOWN = 3


def load_report(path: str) -> dict[str, Any]:
    """A report file; ``UsageError`` naming the file when it is not one."""
    try:
        with open(path, encoding="utf-8") as f:
            data = json.load(f)
    except FileNotFoundError:
        raise UsageError(f"compare: {path}: no such file") from None
    except (OSError, UnicodeDecodeError, ValueError) as exc:
        raise UsageError(f"compare: {path}: not a report ({exc})") from None
    if not isinstance(data, dict) or "cause" not in data:
        raise UsageError(f"compare: {path}: not a report (no cause)")
    return data


def compare(a: Mapping[str, Any], b: Mapping[str, Any], names: Sequence[str] = ("A", "B")
            ) -> list[str]:
    """The comparison in lines: a table (``*`` marks a difference), then the variables."""
    rows = [(label, _text(get(a)), _text(get(b))) for label, get in _ROWS]
    width_label = max(len(label) for label, _, _ in rows)
    width_a = min(36, max(len(names[0]), *(len(v) for _, v, _ in rows)))
    lines = [f"  {'':<{width_label}}  {names[0]:<{width_a}}  {names[1]}"]
    for label, left, right in rows:
        mark = "*" if left != right else " "
        lines.append(f"{mark} {label:<{width_label}}  {left:<{width_a}}  {right}")
    lines += _variables(a, b, names)
    return lines


def _text(value: Optional[str]) -> str:
    return "unknown" if value is None or value == "" else value


def _section(data: Mapping[str, Any], name: str) -> Mapping[str, Any]:
    value = data.get(name)
    return value if isinstance(value, Mapping) else {}


def _end(data: Mapping[str, Any]) -> Optional[str]:
    if data.get("signal"):
        return f"{data['signal']} (status {data.get('status')})"
    if data.get("exit_code") is not None:
        return f"exit code {data['exit_code']}"
    return None


def _memory_limit(data: Mapping[str, Any]) -> Optional[str]:
    limits = _section(_section(data, "conditions"), "limits")
    imposed = limits.get("memory_bytes")
    if imposed is not None:
        return _mib(imposed)
    seen = _section(data, "memory").get("cgroup_limit_bytes")
    if seen is not None:
        return _mib(seen) + " (the container's)"
    return "none" if "conditions" in data or "memory" in data else None


def _cpus(data: Mapping[str, Any]) -> Optional[str]:
    limits = _section(_section(data, "conditions"), "limits")
    if limits.get("cpus") is not None:
        return f"{limits['cpus']:g}"
    quota = _section(_section(data, "environment"), "cgroup").get("cpu_quota")
    if quota is not None:
        return f"{quota:g} (the container's)"
    return "none" if "conditions" in data else None


def _platform(data: Mapping[str, Any]) -> Optional[str]:
    conditions = _section(data, "conditions")
    platform = conditions.get("platform")
    if isinstance(platform, Mapping):
        return str(platform.get("title"))
    return "none" if conditions else None


def _env_file(data: Mapping[str, Any]) -> Optional[str]:
    conditions = _section(data, "conditions")
    env_file = conditions.get("env_file")
    clean = " (--clean-env)" if conditions.get("clean_env") is not None else ""
    if isinstance(env_file, Mapping):
        return f"{env_file.get('path')}: {env_file.get('variables')} variables{clean}"
    return ("none" + clean) if conditions else None


def _interpreter(data: Mapping[str, Any]) -> Optional[str]:
    found = _section(data, "environment").get("interpreter")
    if not isinstance(found, Mapping):
        return None
    return f"{found.get('path')} ({found.get('version') or 'version unknown'})"


def _cgroup(data: Mapping[str, Any]) -> Optional[str]:
    cgroup = _section(_section(data, "environment"), "cgroup")
    version = cgroup.get("version") or _section(data, "memory").get("cgroup_version")
    return f"v{version}" if version else None


def _seconds(value: Any) -> Optional[str]:
    return None if value is None else f"{float(value):.2f} s"


def _slowest(data: Mapping[str, Any]) -> Optional[str]:
    slowest = _section(data, "startup").get("slowest_imports") or []
    if not slowest:
        return None
    return ", ".join(f"{item.get('module')} {float(item.get('cumulative_s', 0)):.2f} s"
                     for item in slowest[:SLOWEST_SHOWN])


def _peak(data: Mapping[str, Any]) -> Optional[str]:
    value = _section(data, "memory").get("peak_rss_bytes")
    return None if value is None else _mib(value)


def _mib(value: float) -> str:
    return f"{value / _MIB:.0f} MiB" if value >= 10 * _MIB else f"{value / _MIB:.1f} MiB"


_ROWS: tuple[tuple[str, Any], ...] = (
    ("cause", lambda d: d.get("cause")),
    ("end", _end),
    ("phase", lambda d: d.get("phase")),
    ("ready after", lambda d: _seconds(d.get("ready_after_s")) or "never"),
    ("uptime", lambda d: _seconds(d.get("uptime_s"))),
    ("platform", _platform),
    ("memory limit", _memory_limit),
    ("CPU limit", _cpus),
    ("network", lambda d: _section(d, "conditions").get("network")),
    ("health check", lambda d: _section(d, "conditions").get("health_check") or (
        "none" if "conditions" in d else None)),
    ("env file", _env_file),
    ("interpreter", _interpreter),
    ("kernel", lambda d: _section(d, "environment").get("kernel")),
    ("cgroup", _cgroup),
    ("command", lambda d: " ".join(d.get("command") or ()) or None),
    ("imports", lambda d: _seconds(_section(d, "startup").get("import_total_s"))),
    ("slowest imports", _slowest),
    ("memory peak", _peak),
)


def _variables(a: Mapping[str, Any], b: Mapping[str, Any], names: Sequence[str]) -> list[str]:
    env_a, env_b = _section(a, "environment"), _section(b, "environment")
    vars_a, vars_b = _section(env_a, "variables"), _section(env_b, "variables")
    if not vars_a or not vars_b:
        return ["variables: not compared (a report has no environment section)"]
    lines: list[str] = []
    for name, only in ((names[0], sorted(set(vars_a) - set(vars_b))),
                       (names[1], sorted(set(vars_b) - set(vars_a)))):
        if only:
            lines.append(f"variables only in {name} ({len(only)}): {_names(only)}")
    same_key = env_a.get("key_id") is not None and env_a.get("key_id") == env_b.get("key_id")
    differ: list[str] = []
    unknown = 0
    for var in sorted(set(vars_a) & set(vars_b)):
        left, right = vars_a[var], vars_b[var]
        if "hmac" in left and "hmac" in right and same_key:
            if left["hmac"] != right["hmac"]:
                differ.append(var)
        elif "length" in left and "length" in right:
            if (left["length"], left.get("empty")) != (right["length"], right.get("empty")):
                differ.append(var)
            else:
                unknown += 1
        else:
            unknown += 1
    if differ:
        lines.append(f"variables whose values differ ({len(differ)}): {_names(differ)}")
    if not lines:
        lines.append("variables: the same names" + (" and values" if not unknown else ""))
    if unknown:
        lines.append(
            f"values of {unknown} variable{'s' * (unknown != 1)} could only be compared by "
            "length: give both runs the same SUPERVISOR_COMPARE_KEY to compare them"
        )
    return lines


def _names(names: Sequence[str]) -> str:
    if len(names) <= NAMES_SHOWN:
        return ", ".join(names)
    return f"{', '.join(names[:NAMES_SHOWN])} and {len(names) - NAMES_SHOWN} more"


def run(paths: Sequence[str]) -> str:
    """``supervisor compare A.json B.json``: the text to print."""
    if len(paths) != 2 or any(p.startswith("-") for p in paths):
        raise UsageError("compare: expected two report files: supervisor compare A.json B.json")
    a, b = (load_report(path) for path in paths)
    header = f"comparing A: {paths[0]} with B: {paths[1]}"
    return "\n".join([header, *compare(a, b)])
