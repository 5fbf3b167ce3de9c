"""Self-check for tugboat_moto.py: start it on a free port and drive a rollout,
a crashloop with circuit-breaker rollback, a hang, and the transitions log.

    ~/.cache/tugboat-moto-venv/bin/python tests/support/moto/check_rollout.py

Exits 0 and prints the observed timings when everything holds.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import boto3
from botocore.config import Config

HERE = Path(__file__).resolve().parent
ROLLOUT = float(os.environ.setdefault("TUGBOAT_MOTO_ROLLOUT_SECONDS", "1.5"))
FAIL = float(os.environ.setdefault("TUGBOAT_MOTO_FAIL_SECONDS", "0.3"))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def start() -> tuple[subprocess.Popen, str, float]:
    port = free_port()
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, str(HERE / "tugboat_moto.py"), "--host", "127.0.0.1", "--port", str(port),
         "--exit-on-stdin-eof"],
        stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
    )
    line = proc.stdout.readline()
    assert line.startswith("tugboat-moto ready on http://"), line
    return proc, line.split()[-1], time.monotonic() - t0


def wait_for(what: str, pred, timeout: float = 15.0, every: float = 0.05):
    t0 = time.monotonic()
    while True:
        value = pred()
        if value:
            return value, time.monotonic() - t0
        assert time.monotonic() - t0 < timeout, f"timed out waiting for {what}"
        time.sleep(every)


def main() -> None:
    proc, endpoint, startup = start()
    print(f"startup (spawn -> ready line): {startup:.2f}s  endpoint {endpoint}")
    try:
        run(endpoint)
    finally:
        proc.stdin.close()  # --exit-on-stdin-eof
        proc.wait(timeout=5)


def run(endpoint: str) -> None:
    kw = dict(endpoint_url=endpoint, region_name="us-east-1", aws_access_key_id="testing",
              aws_secret_access_key="testing", config=Config(s3={"addressing_style": "path"}))
    ec2, ecs = boto3.client("ec2", **kw), boto3.client("ecs", **kw)

    t = time.monotonic()
    vpc = ec2.create_vpc(CidrBlock="10.0.0.0/16")["Vpc"]["VpcId"]
    subnet = ec2.create_subnet(VpcId=vpc, CidrBlock="10.0.1.0/24")["Subnet"]["SubnetId"]
    sg = ec2.create_security_group(GroupName="web", Description="web", VpcId=vpc)["GroupId"]
    ecs.create_cluster(clusterName="c1")
    print(f"first EC2+ECS calls: {time.monotonic() - t:.2f}s")

    def register(family: str, image: str) -> str:
        return ecs.register_task_definition(
            family=family, requiresCompatibilities=["FARGATE"], networkMode="awsvpc", cpu="256",
            memory="512", containerDefinitions=[{"name": "app", "image": image, "essential": True}],
        )["taskDefinition"]["taskDefinitionArn"]

    td1 = register("web", "nginx:1.25")
    td2 = register("web", "nginx:1.27")
    bad = register("web", "example.com/crashloop:1")
    hang = register("web", "example.com/hang:1")
    net = {"awsvpcConfiguration": {"subnets": [subnet], "securityGroups": [sg], "assignPublicIp": "DISABLED"}}

    svc = ecs.create_service(cluster="c1", serviceName="web", taskDefinition=td1, desiredCount=2,
                             launchType="FARGATE", networkConfiguration=net)["service"]
    [dep] = svc["deployments"]
    assert (dep["status"], dep["rolloutState"], dep["runningCount"], dep["taskDefinition"]) == \
        ("PRIMARY", "COMPLETED", 2, td1), dep
    assert svc["deploymentConfiguration"]["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}

    def describe(name: str = "web") -> dict:
        return ecs.describe_services(cluster="c1", services=[name])["services"][0]

    assert describe()["deploymentConfiguration"]["deploymentCircuitBreaker"]["enable"] is True

    # --- healthy rollout -------------------------------------------------
    t_update = time.time()
    svc = ecs.update_service(cluster="c1", service="web", taskDefinition=td2)["service"]
    new, old = svc["deployments"]
    assert new["status"] == "PRIMARY" and new["rolloutState"] == "IN_PROGRESS", new
    assert new["taskDefinition"] == td2 and new["runningCount"] == 0 and new["pendingCount"] == 2, new
    assert new["rolloutStateReason"] == f"ECS deployment {new['id']} in progress."
    assert new["id"].startswith("ecs-svc/") and len(new["id"]) == 8 + 19, new["id"]
    assert old["status"] == "ACTIVE" and old["taskDefinition"] == td1, old
    assert svc["taskDefinition"] == td2
    seen_running = set()

    def completed():
        s = describe()
        seen_running.add(s["deployments"][0]["runningCount"])
        return s if s["deployments"][0]["rolloutState"] == "COMPLETED" else None

    svc, waited = wait_for("healthy rollout", completed)
    [dep] = svc["deployments"]
    assert dep["id"] == new["id"] and dep["runningCount"] == 2 and svc["runningCount"] == 2, svc
    assert dep["rolloutStateReason"] == f"ECS deployment {dep['id']} completed."
    assert 1 in seen_running, seen_running  # it rose gradually
    lag = dep["updatedAt"].timestamp() - t_update
    msgs = [e["message"] for e in svc["events"]]
    assert msgs[0] == "(service web) has reached a steady state.", msgs
    assert msgs[1] == f"(service web) (deployment {dep['id']}) deployment completed.", msgs
    assert msgs[2].startswith("(service web) has started 1 tasks: (task "), msgs
    print(f"healthy rollout: noticed COMPLETED after {waited:.2f}s, updatedAt - update call = {lag:.3f}s "
          f"(ROLLOUT_SECONDS={ROLLOUT}), running seen {sorted(seen_running)}")

    # --- crashloop -> circuit breaker -> rollback -------------------------
    t0 = time.monotonic()
    svc = ecs.update_service(cluster="c1", service="web", taskDefinition=bad)["service"]
    bad_id = svc["deployments"][0]["id"]
    failed_seen = set()

    def failed():
        s = describe()
        d = next(d for d in s["deployments"] if d["id"] == bad_id)
        failed_seen.add(d["failedTasks"])
        assert d["runningCount"] == 0
        return s if d["rolloutState"] == "FAILED" else None

    svc, waited = wait_for("circuit breaker", failed)
    assert {1, 2} <= failed_seen, failed_seen
    primary, failed_dep = svc["deployments"][0], svc["deployments"][1]
    assert failed_dep["id"] == bad_id and failed_dep["status"] == "ACTIVE", failed_dep
    assert failed_dep["failedTasks"] == 3 and failed_dep["rolloutStateReason"] == \
        "ECS deployment circuit breaker: tasks failed to start.", failed_dep
    assert primary["status"] == "PRIMARY" and primary["taskDefinition"] == td2, primary
    assert svc["taskDefinition"] == td2, svc["taskDefinition"]
    msgs = [e["message"] for e in svc["events"]]
    assert f"(service web) (deployment {bad_id}) deployment failed: tasks failed to start." in msgs
    assert any("failed container health checks" in m for m in msgs)
    print(f"crashloop: noticed FAILED+rollback after {waited:.2f}s (3 x FAIL_SECONDS={3 * FAIL:.2f}s), "
          f"failedTasks seen {sorted(failed_seen)}")
    rollback_id = primary["id"]
    svc, waited = wait_for("rollback completes", lambda: (s := describe())["deployments"][0]["rolloutState"]
                           == "COMPLETED" and s)
    assert [d["id"] for d in svc["deployments"]] == [rollback_id], svc["deployments"]
    assert svc["runningCount"] == 2 and svc["taskDefinition"] == td2
    print(f"rollback: COMPLETED {waited:.2f}s later; whole crashloop episode {time.monotonic() - t0:.2f}s")

    # --- rollback disabled: FAILED stays PRIMARY -------------------------
    ecs.create_service(cluster="c1", serviceName="norb", taskDefinition=td1, desiredCount=1,
                       launchType="FARGATE", networkConfiguration=net,
                       deploymentConfiguration={"deploymentCircuitBreaker": {"enable": True, "rollback": False}})
    d0 = ecs.update_service(cluster="c1", service="norb", taskDefinition=bad)["service"]["deployments"][0]
    svc, _ = wait_for("norb FAILED", lambda: (s := describe("norb"))["deployments"][0]["rolloutState"]
                      == "FAILED" and s)
    assert svc["deployments"][0]["id"] == d0["id"] and svc["deployments"][0]["status"] == "PRIMARY"
    assert svc["taskDefinition"] == bad
    time.sleep(ROLLOUT + 0.2)
    assert describe("norb")["deployments"][0]["id"] == d0["id"]

    # --- hang -------------------------------------------------------------
    d0 = ecs.update_service(cluster="c1", service="web", taskDefinition="web:4")["service"]["deployments"][0]
    assert d0["taskDefinition"] == hang, d0
    time.sleep(max(ROLLOUT, 4 * FAIL) + 0.5)
    d = describe()["deployments"][0]
    assert d["id"] == d0["id"] and d["rolloutState"] == "IN_PROGRESS", d
    assert d["runningCount"] == 0 and d["failedTasks"] == 0, d

    # --- desiredCount / forceNewDeployment make deployments --------------
    ecs.update_service(cluster="c1", service="web", taskDefinition=td2)
    n = len(ecs.update_service(cluster="c1", service="web", forceNewDeployment=True)["service"]["deployments"])
    assert n == 4, n  # new PRIMARY + the td2 one + the hung one + the last COMPLETED one
    wait_for("force completes", lambda: len(describe()["deployments"]) == 1)
    s = ecs.update_service(cluster="c1", service="web", desiredCount=3)["service"]
    assert s["deployments"][0]["desiredCount"] == 3 and s["deployments"][0]["pendingCount"] == 3
    s, _ = wait_for("scale completes", lambda: len((s := describe())["deployments"]) == 1 and s)
    assert s["runningCount"] == 3 and s["deployments"][0]["runningCount"] == 3, s
    assert len(ecs.update_service(cluster="c1", service="web", desiredCount=3)["service"]["deployments"]) == 1

    # --- transitions log --------------------------------------------------
    with urllib.request.urlopen(f"{endpoint}/tugboat-moto/transitions") as r:
        log = json.load(r)
    states = [(x["deploymentId"], x["state"]) for x in log]
    assert (new["id"], "COMPLETED") in states and (bad_id, "FAILED") in states, log
    assert (rollback_id, "COMPLETED") in states, log
    first = next(x for x in log if x["deploymentId"] == new["id"])
    assert abs(first["at"] - (t_update + ROLLOUT)) < 0.1, (first, t_update)
    assert [x["at"] for x in log] == sorted(x["at"] for x in log)
    print(f"transitions: {len(log)} entries, e.g. {first}")

    # --- other services still served, reset clears the log -----------------
    s3, ssm = boto3.client("s3", **kw), boto3.client("ssm", **kw)
    s3.create_bucket(Bucket="artifacts")
    s3.put_object(Bucket="artifacts", Key="k", Body=b"v")
    assert s3.get_object(Bucket="artifacts", Key="k")["Body"].read() == b"v"
    ssm.put_parameter(Name="/app/x", Value="1", Type="String")
    boto3.client("ecr", **kw).create_repository(repositoryName="web")
    urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST")).read()
    with urllib.request.urlopen(f"{endpoint}/tugboat-moto/transitions") as r:
        assert json.load(r) == []
    assert ecs.list_clusters()["clusterArns"] == []
    print("OK")


if __name__ == "__main__":
    main()
