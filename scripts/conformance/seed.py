# Seeds a running rdrunner-harness for the conformance run, through its
# admin and runner APIs, and prints what the fuzzer needs as shell
# assignments (`NAME=value` lines, values shell-quoted):
#
# - a runner assigned to project `ops`, with its id and token;
# - the inventory of `ops` (a local node and an SSH node);
# - a replica of the runner (after startup);
# - execution 1, whose operation the replica has claimed and reported on, so
#   that claims, reports, output and stored reports answer with real data;
# - execution 2, whose operation is left unclaimed, so that check-ins offer it.
#
# Usage: python seed.py BASE_URL ADMIN_TOKEN

import json
import shlex
import sys
import urllib.error
import urllib.request

# Every call is bounded: a harness that does not answer fails the run.
TIMEOUT_S = 10


class SeedError(Exception):
    """A seeding call did not answer as expected."""


def call(base, method, path, token, body=None, runner_id=None):
    data = None if body is None else json.dumps(body).encode()
    request = urllib.request.Request(base + path, data=data, method=method)
    request.add_header("Authorization", f"Bearer {token}")
    request.add_header("Content-Type", "application/json")
    if runner_id:
        request.add_header("X-Runner-Id", runner_id)
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            text = response.read().decode()
    except urllib.error.HTTPError as e:
        raise SeedError(f"{method} {path} answered {e.code}: {e.read().decode(errors='replace')}") from e
    return json.loads(text) if text else None


def main(base, admin):
    creds = call(base, "POST", "/api/v1/runners", admin,
                 {"name": "conformance-runner", "projects": {"ops": ".*"}})
    runner, token = creds["runnerId"], creds["token"]
    call(base, "PUT", "/api/v1/projects/ops/nodes", admin, [
        {"name": "local1", "executor": "local"},
        {"name": "web1", "hostname": "10.1.0.5", "port": 22, "tags": ["web"]},
    ])
    step = {"type": "command", "command": "echo conformance"}
    first = call(base, "POST", "/api/v1/projects/ops/executions", admin,
                 {"steps": [step], "job": "conformance/first", "user": "ci"})["executionId"]
    second = call(base, "POST", "/api/v1/projects/ops/executions", admin,
                  {"steps": [step], "nodeFilter": "local1"})["executionId"]
    # schemathesis.toml names these ids in its `executions` dictionary.
    if (first, second) != (1, 2):
        raise SeedError(f"the seeded executions are {first} and {second}, not 1 and 2; start from a fresh harness")
    replica = call(base, "POST", "/api/runner/v1/startup", token,
                   {"hostname": "conformance-host", "version": "0.1.0", "pid": 1, "maxRunning": 4},
                   runner_id=runner)["replicaId"]
    op = call(base, "GET", f"/api/v1/executions/{first}", admin)["operations"][0]["id"]
    call(base, "POST", f"/api/runner/v1/operations/{op}/claim", token,
         {"replicaId": replica}, runner_id=runner)
    ts = "2026-11-28T12:00:00.000Z"
    call(base, "POST", "/api/runner/v1/reports", token, {"replicaId": replica, "reports": [
        {"opId": op, "seq": 1, "ts": ts, "kind": "node", "node": "local1", "step": 1, "state": "running"},
        {"opId": op, "seq": 2, "ts": ts, "kind": "log", "node": "local1", "step": 1,
         "stream": "stdout", "text": "conformance"},
    ]}, runner_id=runner)
    values = {
        "CONFORMANCE_RUNNER_ID": runner,
        "CONFORMANCE_RUNNER_TOKEN": token,
        "CONFORMANCE_REPLICA_ID": replica,
        "CONFORMANCE_OP_ID": op,
        "CONFORMANCE_EXECUTION_ID": str(first),
        "CONFORMANCE_OFFERED_EXECUTION_ID": str(second),
    }
    for name, value in values.items():
        print(f"{name}={shlex.quote(value)}")


if __name__ == "__main__":
    if len(sys.argv) != 3:
        sys.exit("usage: seed.py BASE_URL ADMIN_TOKEN")
    try:
        main(sys.argv[1].rstrip("/"), sys.argv[2])
    except (SeedError, OSError, KeyError, IndexError, ValueError) as e:
        sys.exit(f"seeding the harness failed: {e}; is it running at {sys.argv[1]}?")
