"""Moved: ``envfile`` (the environment), ``netns`` (no network), ``child_cgroup`` (limits).

Kept only until every caller imports from those; nothing new uses it.
"""

from __future__ import annotations

from .child_cgroup import ChildCgroup, docker_equivalent
from .envfile import MINIMAL_PATH, parse_env_file, reproduce_environment
from .netns import check_can_unshare_network, enter_new_network_namespace

__all__ = [
    "MINIMAL_PATH",
    "ChildCgroup",
    "check_can_unshare_network",
    "docker_equivalent",
    "enter_new_network_namespace",
    "parse_env_file",
    "reproduce_environment",
]
