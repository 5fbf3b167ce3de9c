"""tugboat-moto: moto's server with ECS deployments that progress like real ECS.

Usage:  python tugboat_moto.py --host 127.0.0.1 --port 5000 [--exit-on-stdin-eof]

Serves every moto service exactly like ``moto_server`` (S3 path style, SSM,
ECR, EC2, /moto-api/reset, ...) and prints ``tugboat-moto ready on
http://HOST:PORT`` once the socket accepts connections.

Plain moto never moves an ECS deployment: after update_service the single
PRIMARY deployment keeps the old task definition and stays IN_PROGRESS, and
deploymentConfiguration is dropped.  This module patches moto's ECS backend
(moto.ecs.models.EC2ContainerServiceBackend, moto 5.2.x) so that:

* create_service makes one PRIMARY deployment, COMPLETED, running == desired,
  and keeps deploymentConfiguration (default circuit breaker enable+rollback,
  maximumPercent 200, minimumHealthyPercent 100).
* update_service with another task definition, another desiredCount or
  forceNewDeployment starts a NEW PRIMARY deployment (id ``ecs-svc/`` + 19
  digits, IN_PROGRESS, running 0, pending = desired); the old PRIMARY becomes
  ACTIVE; the service's taskDefinition becomes the requested ARN.
* Time is evaluated lazily from the wall clock whenever services are read or
  updated, and every transition is stamped with the moment it *would* have
  happened (not the moment of the read):
  - healthy image: runningCount rises linearly to desired over
    TUGBOAT_MOTO_ROLLOUT_SECONDS (default 1.5), then COMPLETED; ACTIVE
    deployments are removed; events "has started 1 tasks", "deployment
    completed", "has reached a steady state".
  - an image containing ``crashloop``: running stays 0, failedTasks += 1 every
    TUGBOAT_MOTO_FAIL_SECONDS (default 0.3); at the circuit-breaker threshold
    (ceil(0.5 x desired) clamped to 3..200) the deployment is FAILED and, when
    rollback is on, a new PRIMARY deployment of the last COMPLETED task
    definition starts (and completes like a healthy one; a failed rollback is
    not rolled back again).  Circuit breaker disabled: fails forever.
  - an image containing ``hang``: stays IN_PROGRESS with 0 running forever.
* GET /tugboat-moto/transitions returns the COMPLETED/FAILED moments as JSON
  ``[{"deploymentId", "service", "state", "at"}]`` (epoch seconds, sorted);
  POST /moto-api/reset clears it along with moto's state.

CloudWatch over Smithy RPC v2 CBOR: the AWS SDK for Rust talks CBOR to CloudWatch
(``POST /service/GraniteServiceVersion20100801/operation/<Op>``), which moto 5.2.x
cannot parse. Such a call is translated to the same operation in the AWS JSON 1.0
protocol (which moto serves for CloudWatch), and moto's JSON answer back to CBOR typed
by the botocore output shape. moto's CloudWatch backend does the work, with one
addition: alarms carry StateTransitionedTimestamp (the last change of the state value,
not moved by a SetAlarmState that repeats the state with a new reason).

ECR scans: describe_image_scan_findings answers ScanNotFoundException until
TUGBOAT_MOTO_SCAN_DELAY_SECONDS (default 0) after the image's push; POST
/tugboat-moto/scan-delay ``{"repositoryName", "imageDigest" (optional), "seconds" (null:
never)}`` sets it per image or repository.  After the delay a repository with scan on
push has a scan (stock moto only knows scans from start_image_scan).

GET /tugboat-moto/default-network returns moto's default VPC, subnets and security group
in us-east-1 (``{"vpcId", "subnetIds", "securityGroupIds"}``; ``?region=`` for another), for ELBv2 resources that need
a VPC, since the tests have no EC2 client.

Startup tweaks (moto behaviour otherwise unchanged): MOTO_EC2_LOAD_DEFAULT_AMIS
defaults to false here, and moto's import-time region lookups share one botocore
session (about 1.0 s -> 0.65 s to the ready line); moto's package folder, which its
dispatcher lists on every request, is listed once; requests are not logged one line each
(TUGBOAT_MOTO_LOG_REQUESTS=1 logs them).

Tasks (see "ECS tasks" below): every failed attempt of a crashloop deployment is a
STOPPED task ("Essential container in task exited", exit code 1) that wrote lines to its
awslogs stream (POST /tugboat-moto/crash-logs seeds them); RunTask tasks run their
command minimally (``sh -c "echo a; sleep 2; exit 3"``), StopTask stops them, and
clientToken makes RunTask idempotent.

With TUGBOAT_MOTO_SERVICE_TASKS=1 a healthy deployment has runningCount RUNNING tasks
(startedBy its id, their awslogs streams created; stopped when the deployment goes).

Not modelled: tasks of healthy deployments (without TUGBOAT_MOTO_SERVICE_TASKS), of hanging ones, load balancers/health check grace, minimumHealthyPercent/maximumPercent
(old tasks run until the new deployment completes, then vanish), draining,
capacity providers, task sets / CODE_DEPLOY / EXTERNAL controllers, deployment
alarms, other update_service fields triggering a deployment, and EventBridge.
"""

from __future__ import annotations

import argparse
import base64
import io
import itertools
import hashlib
import json
import math
import os
import random
import re
import shlex
import struct
import sys
import threading
import time
import types
import uuid
from datetime import datetime, timezone
from typing import Any

ROLLOUT_SECONDS = float(os.environ.get("TUGBOAT_MOTO_ROLLOUT_SECONDS", "1.5"))
FAIL_SECONDS = max(0.001, float(os.environ.get("TUGBOAT_MOTO_FAIL_SECONDS", "0.3")))
MAX_EVENTS = 100  # ECS keeps the latest 100 service events

_lock = threading.RLock()  # werkzeug serves requests on threads
_transitions: list[dict[str, Any]] = []
_seq = itertools.count()  # orders events that share a timestamp


def _dt(t: float) -> datetime:
    return datetime.fromtimestamp(t, tz=timezone.utc)


def _deployment_id() -> str:
    return "ecs-svc/" + str(random.randint(10**18, 10**19 - 1))


def _default_config(given: dict[str, Any] | None) -> dict[str, Any]:
    cfg: dict[str, Any] = {
        "deploymentCircuitBreaker": {"enable": True, "rollback": True},
        "maximumPercent": 200,
        "minimumHealthyPercent": 100,
    }
    cfg.update(given or {})
    return cfg


def _kind(backend: Any, task_definition: str | None) -> str:
    """'crashloop', 'hang' or 'ok', from the images of the task definition."""
    if not task_definition:
        return "ok"
    try:
        td = backend.describe_task_definition(task_definition)
    except Exception:
        return "ok"
    return _kind_of_images(backend, [str(c.get("image", "")) for c in td.container_definitions])


def _ecr_tags(image: str) -> list[str]:
    """The tags ECR (moto) holds for `registry/repo@sha256:...`."""
    from moto.ecr.models import ecr_backends

    name, digest = image.split("@", 1)
    repo_name = name.split("/", 1)[1] if "/" in name else name
    tags: list[str] = []
    for account in ecr_backends.values():
        for backend in account.values():
            repo = backend.repositories.get(repo_name)
            for img in getattr(repo, "images", []) or []:
                if img.get_image_digest() == digest and img.image_tag:
                    tags.append(img.image_tag)
    return tags


def patch_ecr() -> None:
    """Image digests as real ECR computes them: sha256 of the manifest bytes (moto hashes
    the layer digests, so every image without layers gets one digest)."""
    from moto.ecr.models import Image

    def _create_digest(self: Any) -> None:
        self._image_digest = "sha256:" + hashlib.sha256(self.image_manifest.encode("utf-8")).hexdigest()

    Image._create_digest = _create_digest


# Scans as ECR registers them: an image's scan does not exist (ScanNotFoundException) until
# SCAN_DELAY_SECONDS after its push, then scan on push starts one.  Per image or per
# repository through POST /tugboat-moto/scan-delay; None is a scan that never starts.
SCAN_DELAY_SECONDS = float(os.environ.get("TUGBOAT_MOTO_SCAN_DELAY_SECONDS", "0"))
_scan_delays: dict[tuple[str, str], float | None] = {}


def set_scan_delay(body: dict[str, Any]) -> None:
    """``{"repositoryName": R, "imageDigest": D (optional: every image of R), "seconds": 3 | null}``."""
    seconds = body.get("seconds")
    key = (str(body["repositoryName"]), str(body.get("imageDigest") or ""))
    with _lock:
        _scan_delays[key] = None if seconds is None else float(seconds)


def _scan_delay(repository: str, digest: str) -> float | None:
    with _lock:
        for key in ((repository, digest), (repository, "")):
            if key in _scan_delays:
                return _scan_delays[key]
    return SCAN_DELAY_SECONDS


def patch_ecr_scans() -> None:
    """describe_image_scan_findings answers ScanNotFoundException until the image's scan
    delay after its push has passed (or forever); afterwards a repository with scan on
    push has a scan (moto only knows scans from start_image_scan)."""
    from moto.ecr.exceptions import ScanNotFoundException
    from moto.ecr.models import ECRBackend, Image

    original_init = Image.__init__

    def image_init(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.tugboat_pushed_at = time.time()

    Image.__init__ = image_init  # type: ignore[method-assign]
    original = ECRBackend.describe_image_scan_findings

    def describe_image_scan_findings(self: Any, registry_id: str, repository_name: str,
                                     image_id: dict[str, Any]) -> Any:
        repo = self._get_repository(repository_name, registry_id)
        image = repo._get_image(image_id.get("imageTag"), image_id.get("imageDigest"))
        delay = _scan_delay(repository_name, image.get_image_digest())
        pushed = getattr(image, "tugboat_pushed_at", 0.0)
        if delay is None or time.time() < pushed + delay:
            idigest = image_id.get("imageDigest") or "null"
            itag = image_id.get("imageTag") or "null"
            raise ScanNotFoundException(
                image_id=f"{{imageDigest:'{idigest}', imageTag:'{itag}'}}",
                repository_name=repository_name,
                registry_id=repo.registry_id,
            )
        if image.last_scan is None and (repo.image_scanning_configuration or {}).get("scanOnPush"):
            image.last_scan = datetime.fromtimestamp(pushed + delay)
        return original(self, registry_id, repository_name, image_id)

    ECRBackend.describe_image_scan_findings = describe_image_scan_findings  # type: ignore[method-assign]


def patch_ssm() -> None:
    """DescribeParameters returns each parameter's ARN, as real SSM does (moto omits it)."""
    from moto.ssm.models import Parameter
    from moto.ssm.utils import parameter_arn

    original = Parameter.describe_response_object

    def describe_response_object(self: Any, *args: Any, **kwargs: Any) -> Any:
        response = original(self, *args, **kwargs)
        region = getattr(self, "region_name", None) or getattr(self, "region", None) or "us-east-1"
        response.setdefault("ARN", parameter_arn(self.account_id, region, self.name))
        return response

    Parameter.describe_response_object = describe_response_object


def patch_cloudwatch() -> None:
    """Alarms carry StateTransitionedTimestamp, as real CloudWatch's do: the moment the
    state value last changed (moto has only StateUpdatedTimestamp, which also moves when
    SetAlarmState repeats the state with a new reason)."""
    from moto.cloudwatch.models import Alarm

    original_init = Alarm.__init__
    original_update = Alarm.update_state

    def __init__(self: Any, *args: Any, **kwargs: Any) -> None:
        original_init(self, *args, **kwargs)
        self.state_transitioned_timestamp = self.state_updated_timestamp

    def update_state(self: Any, reason: str, reason_data: str, state_value: str) -> None:
        previous = self.state_value
        original_update(self, reason, reason_data, state_value)
        if state_value != previous:
            self.state_transitioned_timestamp = self.state_updated_timestamp

    Alarm.__init__ = __init__  # type: ignore[method-assign]
    Alarm.update_state = update_state  # type: ignore[method-assign]


def _new_deployment(svc: Any, td_arn: str, now: float, rollback: bool = False) -> dict[str, Any]:
    template = svc.deployments[0] if svc.deployments else {}
    dep_id = _deployment_id()
    return {
        "id": dep_id,
        "status": "PRIMARY",
        "taskDefinition": td_arn,
        "desiredCount": svc.desired_count,
        "pendingCount": svc.desired_count,
        "runningCount": 0,
        "failedTasks": 0,
        "createdAt": _dt(now),
        "updatedAt": _dt(now),
        "launchType": template.get("launchType", svc.launch_type),
        "platformVersion": template.get("platformVersion", svc.platform_version),
        "platformFamily": template.get("platformFamily"),
        "networkConfiguration": svc.network_configuration or None,
        "rolloutState": "IN_PROGRESS",
        "rolloutStateReason": f"ECS deployment {dep_id} in progress.",
        # private bookkeeping: the serializer only picks the shape's members
        "_kind": _kind(svc._backend, td_arn),
        "_start": now,
        "_rollback": rollback,
        "_started": 0,  # tasks that reached RUNNING (events emitted)
    }


def _event(svc: Any, t: float, message: str) -> None:
    svc.events.append({"id": str(uuid.uuid4()), "createdAt": _dt(t), "message": message, "_seq": next(_seq)})


def _set_counts(svc: Any) -> None:
    """Service counts = sum over deployments; keep the cluster's totals in sync."""
    running = sum(d["runningCount"] for d in svc.deployments)
    pending = sum(d["pendingCount"] for d in svc.deployments)
    cluster = svc._backend.clusters.get(svc.cluster_name)
    if cluster is not None:
        cluster.running_tasks_count += running - svc.running_count
        cluster.pending_tasks_count += pending - svc.pending_count
    svc.running_count, svc.pending_count = running, pending


def _record(svc: Any, dep: dict[str, Any], state: str, t: float) -> None:
    _transitions.append({"deploymentId": dep["id"], "service": svc.name, "state": state, "at": t})


def _tick(svc: Any, now: float | None = None) -> None:
    """Advance the PRIMARY deployment of one service to `now`."""
    if now is None:
        now = time.time()
    if svc.status != "ACTIVE" or not svc.deployments or not hasattr(svc, "_tug_last_completed"):
        return
    name = f"(service {svc.name})"
    while True:
        dep = svc.deployments[0]
        if dep["rolloutState"] != "IN_PROGRESS":
            break
        start, desired, kind = dep["_start"], dep["desiredCount"], dep["_kind"]
        if kind == "ok":
            done_at = start + ROLLOUT_SECONDS
            if now >= done_at:
                running = desired
            else:
                running = min(desired, int(desired * (now - start) / ROLLOUT_SECONDS))
            for i in range(dep["_started"] + 1, running + 1):
                t = start + ROLLOUT_SECONDS * i / desired
                _event(svc, t, f"{name} has started 1 tasks: (task {uuid.uuid4().hex}).")
            if running > dep["_started"]:
                dep["_started"] = running
                dep["updatedAt"] = _dt(start + ROLLOUT_SECONDS * running / desired)
            dep["runningCount"], dep["pendingCount"] = running, desired - running
            if now < done_at:
                break
            dep["rolloutState"] = "COMPLETED"
            dep["rolloutStateReason"] = f"ECS deployment {dep['id']} completed."
            dep["updatedAt"] = _dt(done_at)
            svc.deployments = [dep]  # ACTIVE deployments are drained and removed
            svc._tug_last_completed = dep["taskDefinition"]
            _event(svc, done_at, f"{name} (deployment {dep['id']}) deployment completed.")
            _event(svc, done_at, f"{name} has reached a steady state.")
            _record(svc, dep, "COMPLETED", done_at)
            break
        if kind == "hang":
            break
        # crashloop: attempt k starts at start+(k-1)*FAIL and fails at start+k*FAIL
        cb = _default_config(getattr(svc, "deployment_configuration", None))["deploymentCircuitBreaker"]
        threshold = min(200, max(3, math.ceil(0.5 * desired))) if cb.get("enable") else None
        failed = int((now - start) / FAIL_SECONDS)
        if threshold is not None:
            failed = min(failed, threshold)
        previous = dep["failedTasks"]
        for k in range(max(previous + 1, failed - 20), failed + 1):  # bounded event burst
            t = start + k * FAIL_SECONDS
            task = _crash_task(svc, dep, t - FAIL_SECONDS, t)
            _event(svc, t, f"{name} (task {task.id}) failed container health checks.")
            if threshold is None or k < threshold:
                _event(svc, t, f"{name} has started 1 tasks: (task {uuid.uuid4().hex}).")
        if previous == 0 and dep["_started"] == 0:
            dep["_started"] = 1
            _event(svc, start, f"{name} has started 1 tasks: (task {uuid.uuid4().hex}).")
        if failed > previous:
            dep["failedTasks"] = failed
            dep["updatedAt"] = _dt(start + failed * FAIL_SECONDS)
        if threshold is None or failed < threshold:
            break
        failed_at = start + threshold * FAIL_SECONDS
        dep["rolloutState"] = "FAILED"
        dep["rolloutStateReason"] = "ECS deployment circuit breaker: tasks failed to start."
        dep["pendingCount"] = 0
        _event(svc, failed_at, f"{name} (deployment {dep['id']}) deployment failed: tasks failed to start.")
        _record(svc, dep, "FAILED", failed_at)
        if not cb.get("rollback") or dep["_rollback"] or not svc._tug_last_completed:
            break
        dep["status"] = "ACTIVE"
        svc.task_definition = svc._tug_last_completed
        svc.deployments = [_new_deployment(svc, svc.task_definition, failed_at, rollback=True)] + svc.deployments
        # loop: the rollback deployment may already be done by `now`
    # new lists rather than in-place edits: a response may be serializing the old ones
    svc.events = sorted(svc.events, key=lambda e: (e["createdAt"], e.get("_seq", 0)), reverse=True)[:MAX_EVENTS]
    _set_counts(svc)
    sync_service_tasks(svc, now)


def _refuse_inactive(backend: Any, task_definition: str) -> None:
    """ECS refuses to point a service (or start a task) at a deregistered revision."""
    from moto.ecs.exceptions import EcsClientException

    td = backend.describe_task_definition(task_definition)
    if getattr(td, "status", "ACTIVE") == "INACTIVE":
        raise EcsClientException("TaskDefinition is inactive")


def _ecs_service(resource_id: str) -> Any:
    """The ECS service of an Application Auto Scaling resource id `service/CLUSTER/NAME`."""
    from moto.ecs.models import ecs_backends

    _, cluster, name = resource_id.split("/", 2)
    for account in ecs_backends.values():
        for backend in account.values():
            svc = backend.services.get(f"{cluster}:{name}")
            if svc is not None:
                return svc
    return None


def autoscale(resource_id: str, desired: int) -> dict[str, Any]:
    """What a scaling activity does: the service's desiredCount (and its primary
    deployment's) becomes `desired`, without a new deployment; tasks start at once."""
    with _lock:
        svc = _ecs_service(resource_id)
        if svc is None:
            raise KeyError(resource_id)
        _tick(svc)
        svc.desired_count = desired
        if svc.deployments:
            dep = svc.deployments[0]
            dep["desiredCount"] = desired
            if dep["rolloutState"] == "COMPLETED":
                dep["runningCount"], dep["pendingCount"] = desired, 0
                dep["_started"] = desired
            else:
                dep["pendingCount"] = max(0, desired - dep["runningCount"])
        now = time.time()
        _event(svc, now, f"(service {svc.name}) has set the desired count to {desired} (Application Auto Scaling).")
        svc.events = sorted(svc.events, key=lambda e: (e["createdAt"], e.get("_seq", 0)), reverse=True)[:MAX_EVENTS]
        _set_counts(svc)
        return {"service": svc.name, "desiredCount": desired}


def patch_autoscaling() -> None:
    """RegisterScalableTarget brings the service's desiredCount into [min, max] at once,
    as Application Auto Scaling does when the current capacity is outside the range."""
    from moto.applicationautoscaling.models import ApplicationAutoscalingBackend

    original = ApplicationAutoscalingBackend.register_scalable_target

    def register_scalable_target(self: Any, namespace: str, r_id: str, dimension: str,
                                 min_capacity: Any, max_capacity: Any, *args: Any, **kwargs: Any) -> Any:
        target = original(self, namespace, r_id, dimension, min_capacity, max_capacity, *args, **kwargs)
        if namespace == "ecs" and dimension == "ecs:service:DesiredCount":
            svc = _ecs_service(r_id)
            if svc is not None:
                low = target.min_capacity if target.min_capacity is not None else svc.desired_count
                high = target.max_capacity if target.max_capacity is not None else svc.desired_count
                wanted = min(max(svc.desired_count, int(low)), int(high))
                if wanted != svc.desired_count:
                    autoscale(r_id, wanted)
        return target

    ApplicationAutoscalingBackend.register_scalable_target = register_scalable_target


def tick_everything() -> None:
    from moto.ecs.models import ecs_backends

    with _lock:
        now = time.time()
        for account in list(ecs_backends.values()):
            for backend in list(account.values()):
                for svc in list(getattr(backend, "services", {}).values()):
                    _tick(svc, now)


# Every DescribeServices call (when, which cluster and region, how many services) and
# every UpdateService (when): GET /tugboat-moto/describe-services-calls. A fleet's poller
# is judged by it.
_describe_calls: list[dict[str, Any]] = []


def patch_ecs() -> None:
    from moto.ecs import models, responses

    B = models.EC2ContainerServiceBackend
    orig_create, orig_update = B.create_service, B.update_service
    orig_describe, orig_list = B.describe_services, B.list_services
    orig_describe_clusters = B.describe_clusters
    orig_create_response = responses.EC2ContainerServiceResponse.create_service

    def create_service(self: Any, *args: Any, **kwargs: Any) -> Any:
        with _lock:
            td_str = kwargs.get("task_definition_str") or (args[3] if len(args) > 3 else None)
            if td_str:
                _refuse_inactive(self, td_str)
            svc = orig_create(self, *args, **kwargs)
            now = time.time()
            svc.deployment_configuration = _default_config(None)
            svc._tug_last_completed = svc.task_definition
            if svc.deployments:  # deploymentController ECS
                dep = svc.deployments[0]
                dep.update(
                    id=_deployment_id(), rolloutState="COMPLETED", runningCount=svc.desired_count,
                    pendingCount=0, createdAt=_dt(now), updatedAt=_dt(now),
                    taskDefinition=svc.task_definition, _kind="ok", _start=now, _rollback=False,
                    _started=svc.desired_count,
                )
                dep["rolloutStateReason"] = f"ECS deployment {dep['id']} completed."
                _set_counts(svc)
            return svc

    def create_service_response(self: Any) -> Any:
        result = orig_create_response(self)
        given = self._get_param("deploymentConfiguration")
        if given:
            result.result["service"].deployment_configuration = _default_config(given)
        return result

    def update_service(self: Any, props: dict[str, Any]) -> Any:
        with _lock:
            _describe_calls.append({"op": "UpdateService", "at": time.time(),
                                    "cluster": str(props.get("cluster", "default")).split("/")[-1],
                                    "region": self.region_name, "services": 1})
            svc = self._get_service(props.get("cluster", "default"), props["service"].split("/")[-1])
            _tick(svc)
            old_td, old_desired = svc.task_definition, svc.desired_count
            force = bool(props.pop("force_new_deployment", False))
            given_cfg = props.pop("deployment_configuration", None)
            cluster = self._get_cluster(props.get("cluster", "default"))
            counts = cluster.running_tasks_count, cluster.pending_tasks_count
            running, pending = svc.running_count, svc.pending_count
            td_str = props.get("task_definition")
            if td_str:
                _refuse_inactive(self, td_str)
            svc = orig_update(self, props)  # sets desired_count, task_definition string, ...
            cluster.running_tasks_count, cluster.pending_tasks_count = counts
            svc.running_count, svc.pending_count = running, pending
            if given_cfg:
                svc.deployment_configuration = {**svc.deployment_configuration, **given_cfg}
            if td_str:  # moto stores the string as given ("family", "family:3"); ECS shows the ARN
                svc.task_definition = self.describe_task_definition(td_str).arn
            if svc.deployments and (force or svc.task_definition != old_td or svc.desired_count != old_desired):
                now = time.time()
                for d in svc.deployments:
                    d["status"] = "ACTIVE"
                svc.deployments = [_new_deployment(svc, svc.task_definition, now)] + svc.deployments
            _tick(svc)
            return svc

    def describe_services(self: Any, cluster_str: str, service_names_or_arns: list[str]) -> Any:
        # As ECS: at most 10 services per call.
        if len(service_names_or_arns) > 10:
            from moto.ecs.exceptions import InvalidParameterException
            raise InvalidParameterException(
                f"services can have at most 10 items; {len(service_names_or_arns)} were given")
        with _lock:
            _describe_calls.append({"op": "DescribeServices", "at": time.time(), "cluster": cluster_str.split("/")[-1],
                                    "region": self.region_name,
                                    "services": len(service_names_or_arns)})
            services, failures = orig_describe(self, cluster_str, service_names_or_arns)
            for svc in services:
                _tick(svc)
            return services, failures

    def list_services(self: Any, *args: Any, **kwargs: Any) -> Any:
        tick_everything()
        return orig_list(self, *args, **kwargs)

    def describe_clusters(self: Any, *args: Any, **kwargs: Any) -> Any:
        tick_everything()
        return orig_describe_clusters(self, *args, **kwargs)

    B.create_service, B.update_service = create_service, update_service
    B.describe_services, B.list_services = describe_services, list_services
    B.describe_clusters = describe_clusters
    responses.EC2ContainerServiceResponse.create_service = create_service_response



# --- ECS tasks: a crashloop's stopped tasks, RunTask commands, awslogs streams ------
#
# Stock moto keeps a RunTask task RUNNING until it is described a few times (then it
# walks to STOPPED whatever it runs), has no tasks for a service's deployments, ignores
# clientToken and writes no logs.  Here:
#
# * every failed attempt of a `crashloop` deployment is a STOPPED task (startedBy the
#   deployment id, group service:NAME) with stoppedReason "Essential container in task
#   exited", stopCode EssentialContainerExited, the crashing container's exitCode (1) and
#   the lines it logged in the awslogs stream its task definition names
#   (`<awslogs-stream-prefix>/<container>/<task id>` in `awslogs-group`, `awslogs-region`);
#   POST /tugboat-moto/crash-logs {"lines", "exitCode", "reason"} seeds what they log;
# * a RunTask task is RUNNING at once and runs its container's command (the override's,
#   else the definition's): `sh -c "echo a; sleep 2; exit 3"` logs "a", runs 2 s and stops
#   with exit code 3; StopTask stops it (UserInitiated, exit code 137);
# * RunTask with a clientToken already used in the cluster answers the first call's tasks
#   (ConflictException if the other parameters differ), as ECS does;
# * ListTasks defaults to desiredStatus RUNNING and honours serviceName, as ECS does.
#
# Time is lazy here too: tasks move and log lines appear when ECS or Logs is read.

CRASH_EXIT_CODE = 1
STOPPED_TASKS_KEPT = 50  # per deployment (ECS keeps stopped tasks about an hour)
_crash: dict[str, Any] = {}
_sim_tasks: list[Any] = []  # tasks whose lives this module drives
_client_tokens: dict[tuple[str, str, str], tuple[str, list[Any]]] = {}
_SHELLS = {"sh", "/bin/sh", "bash", "/bin/bash", "ash", "/bin/ash"}


def set_crash_logs(body: dict[str, Any]) -> dict[str, Any]:
    """``{"lines": ["..."], "exitCode": 1, "reason": "..."}``: what the crashing container
    of every crashloop task stopped from now on logs, exits with and gives as reason."""
    lines = body.get("lines")
    if lines is not None and not (isinstance(lines, list) and all(isinstance(x, str) for x in lines)):
        raise ValueError("lines must be a list of strings")
    with _lock:
        _crash.clear()
        _crash.update({
            "lines": lines,
            "exitCode": int(body.get("exitCode", CRASH_EXIT_CODE)),
            "reason": body.get("reason"),
        })
        return dict(_crash)


def interpret_command(argv: list[str]) -> tuple[list[tuple[float, str]], float, int]:
    """What a container's command does, minimally: (lines logged at offsets in seconds,
    running time, exit code).  `sh -c SCRIPT` runs SCRIPT's statements (split on ; && ||
    and newlines): `echo X` logs X, `sleep N` waits N seconds (`infinity`: until stopped),
    `exit N` exits, `false` fails; anything else succeeds at once."""
    if len(argv) >= 3 and argv[0] in _SHELLS and argv[1] == "-c":
        script = argv[2]
    else:
        script = " ".join(shlex.quote(a) for a in argv)
    lines: list[tuple[float, str]] = []
    offset, status = 0.0, 0
    for statement in re.split(r"\s*(?:;|&&|\|\||\n)\s*", script):
        try:
            words = shlex.split(statement)
        except ValueError:
            words = statement.split()
        if not words:
            continue
        command, args = os.path.basename(words[0]), words[1:]
        if command == "echo":
            lines.append((offset, " ".join(args)))
            status = 0
        elif command == "sleep":
            try:
                offset += math.inf if args and args[0] in ("infinity", "inf") else float(args[0])
            except (IndexError, ValueError):
                pass
            status = 0
        elif command == "exit":
            try:
                return lines, offset, (int(args[0]) if args else status) & 0xFF
            except ValueError:
                return lines, offset, 2
        elif command == "false":
            status = 1
        else:
            status = 0
    return lines, offset, status


class _SimContainer:
    """A task's container as DescribeTasks shows it (the serializer picks the members)."""

    def __init__(self, task: Any, definition: dict[str, Any]) -> None:
        self.container_arn = f"arn:aws:ecs:{task.region_name}:{task._account_id}:container/{task.cluster_name}/{task.id}/{uuid.uuid4()}"
        self.task_arn = task.task_arn
        self.name = definition.get("name")
        self.image = definition.get("image")
        self.last_status = "RUNNING"
        self.exit_code: int | None = None
        self.reason: str | None = None
        self.health_status = "UNKNOWN" if not definition.get("healthCheck") else "HEALTHY"
        self.runtime_id = uuid.uuid4().hex
        self.essential = definition.get("essential", True) is not False
        self._log = _awslogs_stream(definition, task)
        self._end_at = math.inf
        self._exit = 0


def _awslogs_stream(definition: dict[str, Any], task: Any) -> tuple[str, str, str] | None:
    """(region, group, stream) of a container with the awslogs driver and a stream prefix."""
    config = definition.get("logConfiguration") or {}
    options = config.get("options") or {}
    if config.get("logDriver") != "awslogs" or not options.get("awslogs-group"):
        return None
    prefix = options.get("awslogs-stream-prefix")
    if not prefix:
        return None  # EC2 tasks without a prefix name the stream by Docker container id
    region = options.get("awslogs-region") or task.region_name
    return region, options["awslogs-group"], f"{prefix}/{definition.get('name')}/{task.id}"


def _put_logs(account: str, where: tuple[str, str, str], events: list[tuple[int, str]]) -> None:
    """Creates the group (as awslogs-create-group would) and the stream, then writes."""
    from moto.logs.models import logs_backends

    region, group, stream = where
    backend = logs_backends[account][region]
    if group not in backend.groups:
        backend.create_log_group(group, {})
    if stream not in backend.groups[group].streams:
        backend.create_log_stream(group, stream)
    if events:
        backend.put_log_events(group, stream, [{"timestamp": t, "message": m} for t, m in sorted(events)])


def _simulate(task: Any, definitions: list[dict[str, Any]], start: float) -> None:
    """Makes `task` one of ours: RUNNING from `start`, with a container per definition."""
    task._tug_status = "RUNNING"
    task.desired_status = "RUNNING"
    task.created_at = _dt(start)
    task.started_at = _dt(start)
    task.health_status = "UNKNOWN"
    task.stop_code = None
    task._tug_stop_at = math.inf
    task._tug_pending: list[tuple[int, tuple[str, str, str], str]] = []
    task.containers = [_SimContainer(task, d) for d in definitions]
    for container in task.containers:
        if container._log is not None:
            _put_logs(task._account_id, container._log, [])
    _sim_tasks.append(task)


def _plan_lines(task: Any, container: Any, lines: list[tuple[float, str]], start: float) -> None:
    if container._log is None:
        return
    for offset, text in lines:
        if start + offset <= container._end_at:
            task._tug_pending.append((int((start + offset) * 1000), container._log, text))
    task._tug_pending.sort(key=lambda e: e[0])


def _stop(task: Any, at: float, stop_code: str, reason: str) -> None:
    """The task stops at `at`: containers still running are killed (137)."""
    task._tug_status = "STOPPED"
    task.desired_status = "STOPPED"
    task.stop_code = stop_code
    task.stopped_reason = reason
    task.stopping_at = task.execution_stopped_at = task.stopped_at = _dt(at)
    task._tug_stop_at = at
    for container in task.containers:
        container.last_status = "STOPPED"
        if container.exit_code is None:
            container.exit_code = container._exit if container._end_at <= at else 137
    cut = int(at * 1000)
    _flush(task, cut)
    task._tug_pending = []


def _flush(task: Any, now_ms: int) -> None:
    due = [e for e in task._tug_pending if e[0] <= now_ms]
    if not due:
        return
    task._tug_pending = [e for e in task._tug_pending if e[0] > now_ms]
    by_stream: dict[tuple[str, str, str], list[tuple[int, str]]] = {}
    for t, where, text in due:
        by_stream.setdefault(where, []).append((t, text))
    for where, events in by_stream.items():
        _put_logs(task._account_id, where, events)


def advance_tasks(now: float | None = None) -> None:
    """Moves every simulated task to `now`: due log lines written, due stops made."""
    if now is None:
        now = time.time()
    with _lock:
        for task in list(_sim_tasks):
            if task._tug_status == "STOPPED":
                continue
            if task._tug_stop_at <= now:
                _stop(task, task._tug_stop_at, "EssentialContainerExited", "Essential container in task exited")
            else:
                _flush(task, int(now * 1000))


SERVICE_TASKS = os.environ.get("TUGBOAT_MOTO_SERVICE_TASKS", "") not in ("", "0")
SERVICE_TASKS_MAX = 20  # per deployment


def sync_service_tasks(svc: Any, now: float) -> None:
    """With TUGBOAT_MOTO_SERVICE_TASKS=1: each deployment of a service has `runningCount`
    RUNNING tasks (startedBy its id, group service:NAME, their awslogs streams created),
    and the tasks of a deployment that is gone are stopped, as ECS's scheduler does."""
    if not SERVICE_TASKS:
        return
    kept: dict[str, list[Any]] = svc.__dict__.setdefault("_tug_service_tasks", {})
    current = {d["id"]: d for d in svc.deployments}
    for dep_id, tasks in list(kept.items()):
        if dep_id not in current:
            for task in tasks:
                if task._tug_status != "STOPPED":
                    _stop(task, now, "ServiceSchedulerInitiated",
                          f"Scaling activity initiated by (deployment {dep_id})")
            del kept[dep_id]
    for dep_id, dep in current.items():
        if dep.get("_kind", "ok") != "ok":
            continue
        tasks = kept.setdefault(dep_id, [])
        running = [t for t in tasks if t._tug_status != "STOPPED"]
        for _ in range(min(SERVICE_TASKS_MAX, int(dep.get("runningCount") or 0)) - len(running)):
            task = _service_task(svc, dep, now)
            svc._backend.tasks.setdefault(svc.cluster_name, {})[task.task_arn] = task
            tasks.append(task)


def _service_task(svc: Any, dep: dict[str, Any], created: float) -> Any:
    """A task of a service's deployment, RUNNING from `created` (its containers run until
    stopped)."""
    from moto.ecs.models import Task
    from moto.moto_api._internal.managed_state_model import ManagedState

    backend = svc._backend
    cluster = backend.clusters.get(svc.cluster_name)
    td = backend.describe_task_definition(dep["taskDefinition"])
    task = Task.__new__(Task)
    ManagedState.__init__(task, model_name="ecs::task", transitions=[("RUNNING", "STOPPED")])
    task.id = str(uuid.uuid4())
    task.cluster_name, task.cluster_arn = cluster.name, cluster.arn
    task.container_instance_arn = None
    task.task_definition_arn = td.arn
    task.overrides = {}
    task.started_by = dep["id"]
    task.tags = []
    task.launch_type = dep.get("launchType") or svc.launch_type
    task.capacity_provider_name = None
    task.platform_version = dep.get("platformVersion")
    task.stopped_reason = ""
    task.resource_requirements = None
    task.region_name = cluster.region_name
    task._account_id = backend.account_id
    task._backend = backend
    task.attachments = []
    task.group = f"service:{svc.name}"
    task.network_configuration = svc.network_configuration or None
    _simulate(task, list(td.container_definitions), created)
    return task


def _crash_task(svc: Any, dep: dict[str, Any], created: float, stopped: float) -> Any:
    """One failed attempt of a crashloop deployment, already STOPPED at `stopped`."""
    backend = svc._backend
    cluster = backend.clusters.get(svc.cluster_name)
    td = backend.describe_task_definition(dep["taskDefinition"])
    definitions = list(td.container_definitions)
    task = _service_task(svc, dep, created)
    crashing = [c for c, d in zip(task.containers, definitions)
                if _kind_of_images(backend, [str(d.get("image", ""))]) == "crashloop"]
    crashing = crashing or [c for c in task.containers if c.essential]
    exit_code = int(_crash.get("exitCode", CRASH_EXIT_CODE))
    for container in task.containers:
        container._end_at = stopped
        container._exit = exit_code if container in crashing else 143  # the others: SIGTERM
        if container.health_status == "HEALTHY":  # it has a health check, and failed it
            container.health_status = task.health_status = "UNHEALTHY"
        if container in crashing:
            container.reason = _crash.get("reason")
            lines = _crash.get("lines")
            if lines is None:
                lines = [f"{container.name}: starting", f"{container.name}: fatal error, exiting with status {exit_code}"]
            span = max(0.0, stopped - created)
            _plan_lines(task, container, [(span * (i + 1) / (len(lines) + 1), text) for i, text in enumerate(lines)], created)
    _stop(task, stopped, "EssentialContainerExited", "Essential container in task exited")
    backend.tasks.setdefault(cluster.name, {})[task.task_arn] = task
    kept = dep.setdefault("_tasks", [])
    kept.append(task)
    while len(kept) > STOPPED_TASKS_KEPT:
        old = kept.pop(0)
        backend.tasks.get(old.cluster_name, {}).pop(old.task_arn, None)
        if old in _sim_tasks:
            _sim_tasks.remove(old)
    return task


def _run_commands(task: Any, td: Any, overrides: dict[str, Any] | None, start: float) -> None:
    """A RunTask task runs each container's command (the override's, else its own)."""
    definitions = list(td.container_definitions)
    _simulate(task, definitions, start)
    by_name = {o.get("name"): o for o in (overrides or {}).get("containerOverrides") or []}
    for container, definition in zip(task.containers, definitions):
        override = by_name.get(container.name) or {}
        command = override.get("command") or definition.get("command") or []
        argv = list(definition.get("entryPoint") or []) + list(command)
        kind = _kind_of_images(task._backend, [str(definition.get("image", ""))])
        if kind == "hang":
            lines, duration, exit_code = [], math.inf, 0
        elif kind == "crashloop":
            lines, duration, exit_code = [], FAIL_SECONDS, int(_crash.get("exitCode", CRASH_EXIT_CODE))
        else:
            lines, duration, exit_code = interpret_command(argv)
        container._end_at, container._exit = start + duration, exit_code
        _plan_lines(task, container, lines, start)
    ends = [c._end_at for c in task.containers if c.essential] or [c._end_at for c in task.containers]
    task._tug_stop_at = min(ends) if ends else start


def _kind_of_images(backend: Any, images: list[str]) -> str:
    """'crashloop', 'hang' or 'ok': releases pin images by digest, so the digest is looked
    up in ECR and judged by its tags too."""
    images = images + [tag for image in images if "@sha256:" in image for tag in _ecr_tags(image)]
    for kind in ("crashloop", "hang"):
        if any(kind in image for image in images):
            return kind
    return "ok"


def patch_ecs_tasks() -> None:
    from moto.core.responses import ActionResult
    from moto.ecs import models, responses
    from moto.ecs.exceptions import ECSException
    from moto.logs.models import LogsBackend

    Task = models.Task
    original_status = Task.last_status

    def get_status(self: Any) -> Any:
        if hasattr(self, "_tug_status"):
            return self._tug_status
        return original_status.fget(self)

    def set_status(self: Any, value: str) -> None:
        if hasattr(self, "_tug_status"):
            self._tug_status = value
        else:
            original_status.fset(self, value)

    Task.last_status = property(get_status, set_status)  # type: ignore[assignment]

    B = models.EC2ContainerServiceBackend
    orig_run, orig_list, orig_describe, orig_stop = B.run_task, B.list_tasks, B.describe_tasks, B.stop_task
    orig_requirements = B._calculate_task_resource_requirements

    # ECS: a Fargate task definition (or one with task-level memory) needs no memory per
    # container; moto adds None and fails RunTask with a 500.
    memory_keys = ("memory", "Memory", "memoryReservation", "MemoryReservation")

    def requirements(task_definition: Any) -> Any:
        containers = [
            c if any(c.get(k) is not None for k in memory_keys) else {**c, "memory": 0}
            for c in task_definition.container_definitions
        ]
        return orig_requirements(types.SimpleNamespace(container_definitions=containers))

    B._calculate_task_resource_requirements = staticmethod(requirements)  # type: ignore[method-assign]

    # ECS: a task's network interface in a VPC without DNS hostnames has no private DNS
    # name; moto's ENI then lacks the attribute and RunTask fails with a 500.
    from moto.ec2.models.elastic_network_interfaces import NetworkInterface
    if not hasattr(NetworkInterface, "private_dns_name"):
        NetworkInterface.private_dns_name = None  # type: ignore[attr-defined]

    def run_task(self: Any, cluster_str: str, task_definition_str: str, *args: Any, **kwargs: Any) -> Any:
        with _lock:
            _refuse_inactive(self, task_definition_str)
            tasks = orig_run(self, cluster_str, task_definition_str, *args, **kwargs)
            overrides = args[1] if len(args) > 1 else kwargs.get("overrides")
            td = self.describe_task_definition(task_definition_str)
            now = time.time()
            for task in tasks:
                _run_commands(task, td, overrides, now)
            advance_tasks(now)
            return tasks

    def list_tasks(self: Any, cluster_str: str | None = None, container_instance: str | None = None,
                   family: str | None = None, started_by: str | None = None,
                   service_name: str | None = None, desiredStatus: str | None = None) -> Any:
        tick_everything()
        with _lock:
            advance_tasks()
            tasks = orig_list(self, cluster_str, container_instance, family, started_by,
                              service_name, desiredStatus or "RUNNING")
            if service_name:
                name = service_name.split("/")[-1]
                tasks = [t for t in tasks if t.group == f"service:{name}"]
            return tasks

    def describe_tasks(self: Any, cluster_str: str, tasks: list[str]) -> Any:
        tick_everything()
        with _lock:
            advance_tasks()
            return orig_describe(self, cluster_str, tasks)

    def stop_task(self: Any, cluster_str: str, task_str: str, reason: str) -> Any:
        with _lock:
            advance_tasks()
            cluster = self._get_cluster(cluster_str)
            task_id = task_str.split("/")[-1]
            for arn, task in (self.tasks.get(cluster.name) or {}).items():
                if arn.endswith(task_id) and hasattr(task, "_tug_status"):
                    if task._tug_status != "STOPPED":
                        _stop(task, time.time(), "UserInitiated", reason or "Task stopped by user")
                    return task
            return orig_stop(self, cluster_str, task_str, reason)

    B.run_task, B.list_tasks, B.describe_tasks, B.stop_task = run_task, list_tasks, describe_tasks, stop_task

    orig_run_response = responses.EC2ContainerServiceResponse.run_task

    def run_task_response(self: Any) -> Any:
        token = self._get_param("clientToken")
        if not token:
            return orig_run_response(self)
        cluster = self.ecs_backend._get_cluster(self._get_param("cluster", "default"))
        params = {k: v for k, v in json.loads(self.body or "{}").items() if k != "clientToken"}
        fingerprint = json.dumps(params, sort_keys=True)
        key = (self.current_account, cluster.arn, token)
        with _lock:
            seen = _client_tokens.get(key)
            if seen is not None:
                if seen[0] != fingerprint:
                    raise ECSException("ConflictException",
                                       "The client token was used before with different parameters.")
                advance_tasks()
                return ActionResult({"tasks": seen[1], "failures": []})
            result = orig_run_response(self)
            _client_tokens[key] = (fingerprint, list(result.result["tasks"]))
            return result

    responses.EC2ContainerServiceResponse.run_task = run_task_response

    for name in ("get_log_events", "filter_log_events", "describe_log_streams"):
        original = getattr(LogsBackend, name)

        def read(self: Any, *args: Any, _original: Any = original, **kwargs: Any) -> Any:
            with _lock:
                advance_tasks()
            return _original(self, *args, **kwargs)

        setattr(LogsBackend, name, read)

# --- Smithy RPC v2 CBOR -> moto's JSON protocol ------------------------------------
#
# The AWS SDK for Rust speaks Smithy RPC v2 CBOR to CloudWatch (the service model
# lists it first), and moto 5.2.x parses only JSON/query/XML. This shim turns such a
# request into the same call in the AWS JSON 1.0 protocol (which moto serves for
# CloudWatch, as boto3 uses it), and moto's JSON answer back into CBOR, typed by the
# botocore output shape (timestamps as tag 1 epoch seconds, doubles as floats).
# Nothing about the call changes: same operation, same members, same backend.

RPC_V2_SERVICES = {"GraniteServiceVersion20100801": "cloudwatch"}
_RPC_PATH = re.compile(r"^/service/([^/]+)/operation/([^/]+)$")


class _Break:
    pass


_BREAK = _Break()


def cbor_decode(data: bytes) -> Any:
    value, end = _cbor_item(data, 0)
    if end != len(data):
        raise ValueError(f"{len(data) - end} bytes after the CBOR item")
    return value


def _cbor_argument(data: bytes, pos: int, info: int) -> tuple[int | None, int]:
    if info < 24:
        return info, pos
    if info == 31:
        return None, pos
    size = {24: 1, 25: 2, 26: 4, 27: 8}[info]
    return int.from_bytes(data[pos:pos + size], "big"), pos + size


def _cbor_item(data: bytes, pos: int) -> tuple[Any, int]:
    initial = data[pos]
    major, info = initial >> 5, initial & 0x1F
    pos += 1
    if major == 7:
        if info == 20:
            return False, pos
        if info == 21:
            return True, pos
        if info in (22, 23):
            return None, pos
        if info == 25:
            return struct.unpack(">e", data[pos:pos + 2])[0], pos + 2
        if info == 26:
            return struct.unpack(">f", data[pos:pos + 4])[0], pos + 4
        if info == 27:
            return struct.unpack(">d", data[pos:pos + 8])[0], pos + 8
        if info == 31:
            return _BREAK, pos
        raise ValueError(f"unsupported CBOR simple value {info}")
    arg, pos = _cbor_argument(data, pos, info)
    if major == 0:
        return arg, pos
    if major == 1:
        return -1 - (arg or 0), pos
    if major in (2, 3):
        if arg is None:  # indefinite: definite chunks until break
            chunks = []
            while data[pos] != 0xFF:
                chunk, pos = _cbor_item(data, pos)
                chunks.append(chunk)
            joined = b"".join(chunks) if major == 2 else "".join(chunks)
            return joined, pos + 1
        raw = data[pos:pos + arg]
        return (bytes(raw) if major == 2 else raw.decode("utf-8")), pos + arg
    if major == 4:
        items = []
        while arg is None or len(items) < arg:
            item, pos = _cbor_item(data, pos)
            if item is _BREAK:
                break
            items.append(item)
        return items, pos
    if major == 5:
        mapping: dict[Any, Any] = {}
        while arg is None or len(mapping) < arg:
            key, pos = _cbor_item(data, pos)
            if key is _BREAK:
                break
            mapping[key], pos = _cbor_item(data, pos)
        return mapping, pos
    if major == 6:  # tags: 1 (epoch timestamp) is the only one Smithy uses
        return _cbor_item(data, pos)
    raise ValueError(f"unsupported CBOR major type {major}")


class CborTimestamp(float):
    """Epoch seconds, encoded with CBOR tag 1."""


def _cbor_head(major: int, value: int) -> bytes:
    if value < 24:
        return bytes([major << 5 | value])
    for info, size in ((24, 1), (25, 2), (26, 4), (27, 8)):
        if value < 1 << (8 * size):
            return bytes([major << 5 | info]) + value.to_bytes(size, "big")
    raise ValueError(f"integer {value} too large for CBOR")


def cbor_encode(value: Any) -> bytes:
    if value is None:
        return b"\xf6"
    if value is True:
        return b"\xf5"
    if value is False:
        return b"\xf4"
    if isinstance(value, CborTimestamp):
        return b"\xc1" + struct.pack(">Bd", 0xFB, float(value))
    if isinstance(value, int):
        return _cbor_head(0, value) if value >= 0 else _cbor_head(1, -1 - value)
    if isinstance(value, float):
        return struct.pack(">Bd", 0xFB, value)
    if isinstance(value, bytes):
        return _cbor_head(2, len(value)) + value
    if isinstance(value, str):
        raw = value.encode("utf-8")
        return _cbor_head(3, len(raw)) + raw
    if isinstance(value, (list, tuple)):
        return _cbor_head(4, len(value)) + b"".join(cbor_encode(v) for v in value)
    if isinstance(value, dict):
        return _cbor_head(5, len(value)) + b"".join(
            cbor_encode(k) + cbor_encode(v) for k, v in value.items())
    raise TypeError(f"cannot encode {type(value).__name__} as CBOR")


def _cbor_to_json(value: Any) -> Any:
    if isinstance(value, bytes):  # JSON protocols carry blobs as base64
        return base64.b64encode(value).decode()
    if isinstance(value, list):
        return [_cbor_to_json(v) for v in value]
    if isinstance(value, dict):
        return {k: _cbor_to_json(v) for k, v in value.items()}
    return value


def _typed(value: Any, shape: Any) -> Any:
    """moto's JSON value as the CBOR type its botocore shape has."""
    if value is None or shape is None:
        return value
    kind = shape.type_name
    if kind == "structure":
        members = shape.members
        return {k: _typed(v, members.get(k)) for k, v in value.items() if v is not None}
    if kind == "list":
        return [_typed(v, shape.member) for v in value]
    if kind == "map":
        return {k: _typed(v, shape.value) for k, v in value.items()}
    if kind == "timestamp":
        if isinstance(value, str):
            try:
                return CborTimestamp(float(value))
            except ValueError:
                return CborTimestamp(datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp())
        return CborTimestamp(value)
    if kind in ("double", "float"):
        return float(value)
    if kind in ("integer", "long", "short", "byte"):
        return int(value)
    if kind == "blob" and isinstance(value, str):
        return base64.b64decode(value)
    return value


_service_models: dict[str, Any] = {}


def _operation_model(service: str, operation: str) -> Any:
    if service not in _service_models:
        import botocore.session
        _service_models[service] = botocore.session.get_session().get_service_model(service)
    return _service_models[service].operation_model(operation)


def rpc_v2_cbor_call(moto_app: Any, environ: dict[str, Any], start_response: Any) -> Any | None:
    """Serves a Smithy RPC v2 CBOR call through moto's JSON protocol; None if it is not one."""
    match = _RPC_PATH.match(environ.get("PATH_INFO", ""))
    if not match or environ.get("HTTP_SMITHY_PROTOCOL") != "rpc-v2-cbor":
        return None
    target, operation = match.groups()
    service = RPC_V2_SERVICES.get(target)
    if service is None:
        return None
    length = int(environ.get("CONTENT_LENGTH") or 0)
    raw = environ["wsgi.input"].read(length) if length else b""
    params = cbor_decode(raw) if raw else {}
    body = json.dumps(_cbor_to_json(params)).encode()
    inner = dict(environ)
    inner.update({
        "PATH_INFO": "/",
        "CONTENT_TYPE": "application/x-amz-json-1.0",
        "CONTENT_LENGTH": str(len(body)),
        "HTTP_X_AMZ_TARGET": f"{target}.{operation}",
        "wsgi.input": io.BytesIO(body),
    })
    inner.pop("HTTP_SMITHY_PROTOCOL", None)
    captured: dict[str, Any] = {}

    def capture(status: str, headers: list[tuple[str, str]], exc_info: Any = None) -> Any:
        captured["status"], captured["headers"] = status, headers
        return lambda _data: None

    chunks = moto_app(inner, capture)
    answer = b"".join(chunks)
    if hasattr(chunks, "close"):
        chunks.close()
    status = captured.get("status", "500 INTERNAL SERVER ERROR")
    decoded = json.loads(answer) if answer.strip() else {}
    if status.startswith("2"):
        output = _operation_model(service, operation).output_shape
        decoded = _typed(decoded, output) if output is not None else {}
    out = cbor_encode(decoded)
    headers = [(k, v) for k, v in captured.get("headers", [])
               if k.lower() not in ("content-type", "content-length")]
    headers += [("Content-Type", "application/cbor"), ("smithy-protocol", "rpc-v2-cbor"),
                ("Content-Length", str(len(out)))]
    start_response(status, headers)
    return [out]


def default_network(query: str) -> dict[str, Any]:
    """The default VPC of a region, its default subnets and its default security group
    (moto makes them with random ids)."""
    from urllib.parse import parse_qs
    from moto.ec2.models import ec2_backends

    args = parse_qs(query)
    account = args.get("account", ["123456789012"])[0]
    region = args.get("region", ["us-east-1"])[0]
    backend = ec2_backends[account][region]
    vpc = backend.default_vpc
    subnets = sorted(s.id for s in backend.describe_subnets(filters={"vpc-id": [vpc.id]}))
    groups = sorted(g.id for g in backend.describe_security_groups(
        filters={"vpc-id": [vpc.id], "group-name": ["default"]}))
    return {"vpcId": vpc.id, "subnetIds": subnets, "securityGroupIds": groups}


_s3_conditional_lock = threading.Lock()


def patch_s3() -> None:
    """moto 5.2.5 checks PutObject's If-Match / If-None-Match and DeleteObject's If-Match
    (412, 404 when gone) but checks and writes in two steps on a threaded server: two
    conditional writes racing on one key could both pass. S3 makes a conditional write
    atomic, so conditional PutObject/DeleteObject run one at a time here."""
    from moto.s3.responses import S3Response

    for name in ("put_object", "delete_object"):
        original = getattr(S3Response, name)

        def conditional(self: Any, _original: Any = original) -> Any:
            if self.headers.get("If-Match") or self.headers.get("If-None-Match"):
                with _s3_conditional_lock:
                    return _original(self)
            return _original(self)

        setattr(S3Response, name, conditional)


class TugboatApp:
    """WSGI wrapper: our /tugboat-moto/ routes, otherwise moto's dispatcher."""

    def __init__(self, moto_app: Any) -> None:
        self.moto_app = moto_app

    def __call__(self, environ: dict[str, Any], start_response: Any) -> Any:
        path, method = environ.get("PATH_INFO", ""), environ.get("REQUEST_METHOD")
        if path == "/tugboat-moto/transitions" and method == "GET":
            tick_everything()
            with _lock:
                body = json.dumps(sorted(_transitions, key=lambda t: t["at"])).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/tugboat-moto/autoscale" and method == "POST":
            # ?resource=service/CLUSTER/NAME&desired=N: a scaling activity. The body (if
            # any) is read, so that the connection ends cleanly.
            from urllib.parse import parse_qs
            environ["wsgi.input"].read(int(environ.get("CONTENT_LENGTH") or 0))
            args = parse_qs(environ.get("QUERY_STRING", ""))
            try:
                answer = autoscale(args["resource"][0], int(args["desired"][0]))
                status = "200 OK"
            except (KeyError, ValueError, IndexError) as err:
                answer, status = {"error": f"no such service or bad desired count: {err}"}, "400 BAD REQUEST"
            body = json.dumps(answer).encode()
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/tugboat-moto/describe-services-calls" and method == "GET":
            with _lock:
                body = json.dumps(_describe_calls).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/tugboat-moto/scan-delay" and method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            set_scan_delay(json.loads(environ["wsgi.input"].read(length) or b"{}"))
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", "2")])
            return [b"{}"]
        if path == "/tugboat-moto/default-network" and method == "GET":
            body = json.dumps(default_network(environ.get("QUERY_STRING", ""))).encode()
            start_response("200 OK", [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if method == "POST" and path.startswith("/service/"):
            served = rpc_v2_cbor_call(self.moto_app, environ, start_response)
            if served is not None:
                return served
        if path == "/tugboat-moto/crash-logs" and method == "POST":
            length = int(environ.get("CONTENT_LENGTH") or 0)
            try:
                answer, status = set_crash_logs(json.loads(environ["wsgi.input"].read(length) or b"{}")), "200 OK"
            except (ValueError, TypeError) as err:
                answer, status = {"error": str(err)}, "400 BAD REQUEST"
            body = json.dumps(answer).encode()
            start_response(status, [("Content-Type", "application/json"), ("Content-Length", str(len(body)))])
            return [body]
        if path == "/moto-api/reset" and method == "POST":
            with _lock:
                _transitions.clear()
                _scan_delays.clear()
                _crash.clear()
                _describe_calls.clear()
                _sim_tasks.clear()
                _client_tokens.clear()
        return self.moto_app(environ, start_response)


def _share_region_lookups() -> None:
    """Startup speed: importing moto.ec2 calls boto3.Session().get_available_regions
    three times, each new Session parsing botocore's endpoints data again (~0.15 s
    each).  Answer them from one shared botocore session: same data, one parse."""
    try:
        import boto3.session
        import botocore.session
    except ImportError:
        return
    shared = botocore.session.Session()

    def get_available_regions(self: Any, service_name: str, partition_name: str = "aws",
                              allow_non_regional: bool = False) -> list[str]:
        return shared.get_available_regions(service_name, partition_name, allow_non_regional)

    boto3.session.Session.get_available_regions = get_available_regions  # type: ignore[method-assign]


def _list_moto_modules_once() -> None:
    """Request speed: moto's dispatcher asks backends.list_of_moto_modules() for every
    request, which lists moto's package folder and stats each of its ~150 entries again.
    The folder does not change while the server runs: list it once."""
    from moto import backends

    modules = tuple(backends.list_of_moto_modules())
    backends.list_of_moto_modules = lambda: modules  # type: ignore[assignment]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("-H", "--host", default="127.0.0.1")
    parser.add_argument("-p", "--port", type=int, default=5000)
    parser.add_argument("--exit-on-stdin-eof", action="store_true",
                        help="exit when stdin closes (the parent test process died)")
    args = parser.parse_args()
    # A test whose control request hangs asks for every thread's stack (support/moto.rs).
    import faulthandler
    import signal
    faulthandler.register(signal.SIGUSR1, all_threads=True)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as moto_server does
    # ECS tests need no AMIs; loading ~1300 of them makes the first EC2 call 0.25 s slower.
    os.environ.setdefault("MOTO_EC2_LOAD_DEFAULT_AMIS", "false")
    _share_region_lookups()
    _list_moto_modules_once()
    # Request speed: a line per request on stderr is a tenth of the server's time under a
    # fleet's load. Errors are still logged; TUGBOAT_MOTO_LOG_REQUESTS=1 keeps every line.
    if os.environ.get("TUGBOAT_MOTO_LOG_REQUESTS") != "1":
        import logging
        logging.getLogger("werkzeug").setLevel(logging.WARNING)

    from werkzeug.serving import make_server
    from moto.moto_server.werkzeug_app import (
        DomainDispatcherApplication, MotoRequestHandler, create_backend_app,
    )

    patch_ecs()
    patch_ecs_tasks()
    patch_autoscaling()
    patch_ecr()
    patch_ecr_scans()
    patch_ssm()
    patch_cloudwatch()
    patch_s3()
    moto_app = DomainDispatcherApplication(create_backend_app)
    moto_app.debug = True  # type: ignore[attr-defined]
    server = make_server(args.host, args.port, TugboatApp(moto_app), threaded=True,
                         request_handler=MotoRequestHandler)
    if args.exit_on_stdin_eof:
        def watch_stdin() -> None:
            while sys.stdin.buffer.read(4096):
                pass
            os._exit(0)
        threading.Thread(target=watch_stdin, daemon=True).start()
    # make_server has bound and is listening: connections queue from here on.
    print(f"tugboat-moto ready on http://{args.host}:{server.server_port}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    main()
