"""Drives a running iris-worker with the real connect-python client (generated at test time), in
binary protobuf and in JSON, gzip-compressed and not, and with grpcio over gRPC on the same port.
Every check is an assert; the exit status is the verdict.

Usage: worker_client.py ADDRESS [--token TOKEN]
"""

import sys
import time

import irisgen
from connectrpc.code import Code
from connectrpc.errors import ConnectError

pb, stubs = irisgen.load()
W = pb.Worker


def expect_error(code, fragment, call, *args, **kwargs):
    try:
        call(*args, **kwargs)
    except ConnectError as e:
        assert e.code == code, f"expected {code}, got {e.code}: {e.message}"
        assert fragment in e.message, f"{fragment!r} not in {e.message!r}"
        return e
    raise AssertionError(f"expected {code}, the call succeeded")


def command(task_id, argv, attempt_id=0, ports=()):
    # As Iris's controller sends it: zero values written explicitly, default env from its client.
    return W.RunTaskRequest(
        job_id=task_id.rsplit("/", 1)[0],
        task_id=task_id,
        task_index=0,
        num_tasks=1,
        entrypoint=pb.Entrypoint(command=pb.CommandEntrypoint(argv=argv)),
        environment=pb.EnvironmentConfig(env_vars={"GREETING": "hello"}),
        resources=pb.ResourceSpecProto(cpu=0, memory_bytes=0),
        timeout_seconds=0,
        ports=list(ports),
        attempt_id=attempt_id,
    )


def wait_state(client, task_id, states, limit_s=20):
    deadline = time.time() + limit_s
    while True:
        status = client.get_task_status(W.GetTaskStatusRequest(task_id=task_id))
        if status.state in states:
            return status
        assert time.time() < deadline, f"{task_id} stuck in {status.state}"
        time.sleep(0.05)


def every_method(client, tag):
    health = client.health_check(pb.Empty())
    assert health.healthy and health.uptime_ms > 0, health

    done_id = f"py-{tag}/task-0"
    argv = ["sh", "-c", 'echo "$GREETING $IRIS_TASK_ID $IRIS_PORT_HTTP"; echo two >&2']
    answer = client.run_task(command(done_id, argv, ports=["http"]))
    assert answer.task_id == done_id, answer
    assert answer.state in (pb.TASK_STATE_PENDING, pb.TASK_STATE_BUILDING, pb.TASK_STATE_RUNNING)
    status = wait_state(client, done_id, [pb.TASK_STATE_SUCCEEDED, pb.TASK_STATE_FAILED])
    assert status.state == pb.TASK_STATE_SUCCEEDED, status
    assert status.exit_code == 0 and status.finished_at_ms >= status.started_at_ms > 0, status

    logs = client.fetch_task_logs(W.FetchTaskLogsRequest(task_id=done_id)).logs
    stdout = [l for l in logs if l.source == "stdout"]
    assert len(stdout) == 1 and stdout[0].data.startswith(f"hello {done_id} "), logs
    assert int(stdout[0].data.split()[-1]) >= 20000, "IRIS_PORT_HTTP from the worker's range"
    assert [l.data for l in logs if l.source == "stderr"] == ["two"], logs
    numbers = [l.line_number for l in logs]
    assert numbers == sorted(numbers), numbers
    last = client.fetch_task_logs(
        W.FetchTaskLogsRequest(
            task_id=done_id, filter=W.FetchLogsFilter(regex="^tw", start_line=-5, max_lines=1)
        )
    ).logs
    assert [l.data for l in last] == ["two"], last

    listed = client.list_tasks(W.ListTasksRequest()).tasks
    assert done_id in [t.task_id for t in listed], listed

    # Resubmitting the same attempt is idempotent; a lower one is refused.
    client.run_task(command(done_id, ["true"], attempt_id=0))
    live_id = f"py-{tag}/task-1"
    client.run_task(command(live_id, ["sleep", "30"], attempt_id=2))
    expect_error(Code.FAILED_PRECONDITION, "attempt", client.run_task,
                 command(live_id, ["true"], attempt_id=1))
    wait_state(client, live_id, [pb.TASK_STATE_RUNNING])
    client.kill_task(W.KillTaskRequest(task_id=live_id, term_timeout_ms=1000))
    killed = wait_state(client, live_id, [pb.TASK_STATE_KILLED])
    assert killed.current_attempt_id == 2, killed
    expect_error(Code.FAILED_PRECONDITION, "already completed", client.kill_task,
                 W.KillTaskRequest(task_id=live_id))
    expect_error(Code.NOT_FOUND, "not found", client.kill_task,
                 W.KillTaskRequest(task_id=f"py-{tag}/missing"))
    expect_error(Code.NOT_FOUND, "not found", client.get_task_status,
                 W.GetTaskStatusRequest(task_id=f"py-{tag}/missing"))
    expect_error(Code.INVALID_ARGUMENT, "argv", client.run_task,
                 command(f"py-{tag}/task-2", []))
    expect_error(Code.INVALID_ARGUMENT, "task_id", client.get_task_status,
                 W.GetTaskStatusRequest(task_id="../escape"))
    expect_error(Code.INVALID_ARGUMENT, "regex", client.fetch_task_logs,
                 W.FetchTaskLogsRequest(task_id=done_id, filter=W.FetchLogsFilter(regex="(")))
    print(f"ok: connect {tag}: every method", flush=True)


def grpcio_health(address):
    import grpc

    target = address.split("://", 1)[1]
    with grpc.insecure_channel(target) as channel:
        call = channel.unary_unary(
            "/iris.cluster.WorkerService/HealthCheck",
            request_serializer=pb.Empty.SerializeToString,
            response_deserializer=W.HealthResponse.FromString,
        )
        assert call(pb.Empty(), timeout=5).healthy
        status = channel.unary_unary(
            "/iris.cluster.WorkerService/GetTaskStatus",
            request_serializer=W.GetTaskStatusRequest.SerializeToString,
            response_deserializer=pb.TaskStatus.FromString,
        )(W.GetTaskStatusRequest(task_id="py-proto/task-0"), timeout=5)
        assert status.state == pb.TASK_STATE_SUCCEEDED, status
    print("ok: grpcio on the same port", flush=True)


def main():
    address = sys.argv[1]
    token = sys.argv[sys.argv.index("--token") + 1] if "--token" in sys.argv else None
    Client = stubs.WorkerServiceClientSync
    if token:
        anonymous = Client(address)
        expect_error(Code.UNAUTHENTICATED, "token", anonymous.health_check, pb.Empty())
        wrong = {"authorization": "Bearer not-it"}
        expect_error(Code.UNAUTHENTICATED, "token", anonymous.health_check, pb.Empty(),
                     headers=wrong)
        right = {"authorization": f"Bearer {token}"}
        assert anonymous.health_check(pb.Empty(), headers=right).healthy
        print("ok: connect bearer token", flush=True)
        return
    every_method(Client(address), "proto")
    every_method(Client(address, proto_json=True), "json")
    every_method(Client(address, send_compression=None, accept_compression=[]), "plain")
    grpcio_health(address)
    # A deadline the worker cannot meet: connect-timeout-ms is honoured either way.
    Client(address, timeout_ms=2000).health_check(pb.Empty())


if __name__ == "__main__":
    main()
