"""Presets: the documented defaults of real platforms, for ``--platform NAME``.

Owns: what each platform does to a container by default: its health check,
its memory and CPU, how long it waits for a start and for a stop, and which
variable names the port. Each figure carries its source in a comment.
Must not know: how the values are applied. ``cli`` lays the explicit flags
over a preset (an explicit flag always wins): the health check, the memory and
CPU limits, the start-up deadline and the stop grace are all applied.

A platform without a default (Kubernetes sets no memory limit unless the pod
asks; ECS on Fargate requires the task to choose its size) has None: the
preset does not invent one.
"""

from __future__ import annotations

from .config import HealthCheckSpec
from .errors import UsageError
from .values import frozen

# Read before the spawn (cli lays the preset under the flags): no typing or
# dataclasses at run time.
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Optional

_MIB = 1024 * 1024
_GIB = 1024 * _MIB


@frozen
class Platform:
    name: str  # what --platform takes
    title: str  # what the verdict says: "App Runner would have failed ..."
    health_check: HealthCheckSpec
    memory_limit: Optional[int]  # bytes; None when the platform sets no default
    cpu_limit: Optional[float]  # CPUs; None when the platform sets no default
    # The platform's own deadline for a container to start, when it has one
    # besides the health check (Heroku's R10, Cloud Run's 240 s): applied as
    # --startup-timeout unless one is given.
    startup_timeout_s: Optional[float]
    # Seconds between the platform's SIGTERM and its SIGKILL: applied as
    # --stop-timeout, 2 s shorter so that the report is written before the SIGKILL.
    stop_timeout_s: Optional[float]
    # Described in the run's conditions, not applied: the supervisor takes the
    # port from the command, --port or PORT, as the platform's container would.
    port_env: Optional[str]  # the variable that tells the container its port
    default_port: Optional[int] = None  # the port the platform sets when nobody chooses
    source: str = ""  # the page that documents the health check modelled here


PLATFORMS: dict[str, Platform] = {
    "apprunner": Platform(
        name="apprunner",
        title="App Runner",
        # HealthCheckConfiguration defaults: protocol TCP, path "/", interval 5 s,
        # timeout 2 s, healthy threshold 1, unhealthy threshold 5.
        # https://docs.aws.amazon.com/apprunner/latest/api/API_HealthCheckConfiguration.html
        # https://docs.aws.amazon.com/apprunner/latest/dg/manage-configure-healthcheck.html
        health_check=HealthCheckSpec(
            protocol="tcp",
            path="",
            interval_s=5.0,
            timeout_s=2.0,
            healthy_threshold=1,
            unhealthy_threshold=5,
        ),
        # InstanceConfiguration defaults: 1 vCPU, 2 GB (sizes from 0.25 vCPU / 0.5 GB).
        # https://docs.aws.amazon.com/apprunner/latest/api/API_InstanceConfiguration.html
        memory_limit=2 * _GIB,
        cpu_limit=1.0,
        startup_timeout_s=None,  # decided by the health check alone
        stop_timeout_s=None,  # not documented
        # ImageConfiguration.Port: the port the app listens on, 8080 by default;
        # a setting of the service, not a variable the app is documented to get.
        # https://docs.aws.amazon.com/apprunner/latest/api/API_ImageConfiguration.html
        port_env=None,
        default_port=8080,
        source="https://docs.aws.amazon.com/apprunner/latest/api/API_HealthCheckConfiguration.html",
    ),
    "cloudrun": Platform(
        name="cloudrun",
        title="Cloud Run",
        # The default TCP startup probe: timeoutSeconds 240, periodSeconds 240,
        # failureThreshold 1, i.e. the port must accept a connection within 240 s.
        # https://cloud.google.com/run/docs/configuring/healthchecks
        # ("The default TCP startup probe"). Modelled as a connection attempt
        # every second whose failures count only after a 239 s grace: success
        # at any time within 240 s passes, as on Cloud Run; a single literal
        # 240 s probe would fail at once on a refused connection, which Cloud
        # Run does not do.
        health_check=HealthCheckSpec(
            protocol="tcp",
            path="",
            interval_s=1.0,
            timeout_s=1.0,
            healthy_threshold=1,
            unhealthy_threshold=1,
            grace_s=239.0,
        ),
        # Defaults per instance: 512 MiB of memory, 1 vCPU.
        # https://cloud.google.com/run/docs/configuring/memory-limits
        # https://cloud.google.com/run/docs/configuring/services/cpu
        memory_limit=512 * _MIB,
        cpu_limit=1.0,
        startup_timeout_s=240.0,
        # SIGTERM, then SIGKILL 10 s later.
        # https://cloud.google.com/run/docs/container-contract#instance-shutdown
        stop_timeout_s=10.0,
        # "The container must listen on $PORT", 8080 by default.
        # https://cloud.google.com/run/docs/container-contract#port
        port_env="PORT",
        default_port=8080,
        source="https://cloud.google.com/run/docs/configuring/healthchecks",
    ),
    "heroku": Platform(
        name="heroku",
        title="Heroku",
        # Heroku sends no health check; a web dyno must bind $PORT within 60 s
        # of launch or it is killed (R10 Boot timeout).
        # https://devcenter.heroku.com/articles/error-codes#r10-boot-timeout
        # Modelled like Cloud Run's: a connection attempt every second, failures
        # counted only after a 59 s grace.
        health_check=HealthCheckSpec(
            protocol="tcp",
            path="",
            interval_s=1.0,
            timeout_s=1.0,
            healthy_threshold=1,
            unhealthy_threshold=1,
            grace_s=59.0,
        ),
        # Standard-1X: 512 MB. Fir-generation apps are restarted at 100 % of the
        # quota; Cedar-generation apps swap past it (R14) and are restarted at
        # twice it (R15), so a run killed between 512 MB and 1 GB here would
        # have survived, slowly, on Cedar.
        # https://devcenter.heroku.com/articles/limits#dyno-memory
        # https://devcenter.heroku.com/articles/dyno-memory-behavior
        memory_limit=512 * _MIB,
        cpu_limit=None,  # dynos get a CPU share, not a documented quota
        startup_timeout_s=60.0,
        # "The application processes have 30 seconds to shut down cleanly", then SIGKILL.
        # https://devcenter.heroku.com/articles/dyno-shutdown-behavior
        stop_timeout_s=30.0,
        # The port is assigned per dyno; there is no fixed default.
        # https://devcenter.heroku.com/articles/dyno-startup-behavior#port-binding-of-web-dynos
        port_env="PORT",
        default_port=None,
        source="https://devcenter.heroku.com/articles/error-codes#r10-boot-timeout",
    ),
    "ecs": Platform(
        name="ecs",
        title="ECS",
        # Container HealthCheck defaults: interval 30 s, timeout 5 s, retries 3,
        # startPeriod off. ECS runs a command inside the container; the nearest
        # outside equivalent is an HTTP GET of the supervisor's health path.
        # https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_HealthCheck.html
        health_check=HealthCheckSpec(
            protocol="http",
            path="/healthz",
            interval_s=30.0,
            timeout_s=5.0,
            healthy_threshold=1,
            unhealthy_threshold=3,
            grace_s=0.0,
        ),
        # Fargate requires the task to choose its CPU and memory: no default.
        # https://docs.aws.amazon.com/AmazonECS/latest/developerguide/fargate-tasks-services.html
        memory_limit=None,
        cpu_limit=None,
        startup_timeout_s=None,
        # stopTimeout: 30 s by default on Fargate (and on EC2 unless the agent's
        # ECS_CONTAINER_STOP_TIMEOUT says otherwise).
        # https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_ContainerDefinition.html
        stop_timeout_s=30.0,
        port_env=None,  # ports are fixed in the task definition
        default_port=None,
        source="https://docs.aws.amazon.com/AmazonECS/latest/APIReference/API_HealthCheck.html",
    ),
    "kubernetes": Platform(
        name="kubernetes",
        title="Kubernetes",
        # Probe defaults: periodSeconds 10, timeoutSeconds 1, successThreshold 1,
        # failureThreshold 3, initialDelaySeconds 0. Kubernetes has no default
        # probe or path: an HTTP GET of the supervisor's health path is assumed.
        # https://kubernetes.io/docs/tasks/configure-pod-container/configure-liveness-readiness-startup-probes/#configure-probes
        health_check=HealthCheckSpec(
            protocol="http",
            path="/healthz",
            interval_s=10.0,
            timeout_s=1.0,
            healthy_threshold=1,
            unhealthy_threshold=3,
        ),
        # No limits unless the pod spec sets resources.limits.
        # https://kubernetes.io/docs/concepts/configuration/manage-resources-containers/
        memory_limit=None,
        cpu_limit=None,
        startup_timeout_s=None,
        # terminationGracePeriodSeconds defaults to 30.
        # https://kubernetes.io/docs/concepts/workloads/pods/pod-lifecycle/#pod-termination
        stop_timeout_s=30.0,
        port_env=None,  # containerPort is declared, not passed in a variable
        default_port=None,
        source=(
            "https://kubernetes.io/docs/tasks/configure-pod-container/"
            "configure-liveness-readiness-startup-probes/"
        ),
    ),
}


def get_platform(name: str) -> Platform:
    """The preset called ``name`` (case-insensitive); ``UsageError`` listing the known names."""
    key = name.strip().lower().replace("-", "").replace("_", "").replace(" ", "")
    aliases = {"k8s": "kubernetes", "gcr": "cloudrun", "fargate": "ecs"}
    key = aliases.get(key, key)
    platform = PLATFORMS.get(key)
    if platform is None:
        raise UsageError.bad_value("--platform", name, "one of " + ", ".join(sorted(PLATFORMS)))
    return platform
