"""Drives the real Iris 2026-06 controller (marin-iris, from PyPI) with its own Python client, for
tests/iris_2026_06.rs: launch a job, optionally terminate it, wait for its end, print what the
controller says (job state, each task's state, exit code and error, and the lines its log service
holds per task) as one JSON line.

usage: drive.py PORT NAME REPLICAS [--files name=text,...] [--big-file name=BYTES]
                [--bundle name=text,...] [--setup CMD]... [--constraint key=value]...
                [--terminate-after S] [--wait S] -- ARGV...

A --big-file is BYTES of a repeating pattern (line N is "line N"): past the controller's 10 KB
threshold it becomes a blob ref (workdir_file_refs). --bundle files go into a zip sent as
bundle_blob (the controller stores it and sends bundle_id). --setup lines are setup_commands.
--constraint places the job on workers whose attribute key equals value.
"""
import argparse
import datetime
import io
import json
import sys
import time
import zipfile

from iris.rpc import controller_pb2, job_pb2
from iris.rpc.controller_connect import ControllerServiceClientSync

TERMINAL = {"JOB_STATE_SUCCEEDED", "JOB_STATE_FAILED", "JOB_STATE_KILLED",
            "JOB_STATE_WORKER_FAILED", "JOB_STATE_UNSCHEDULABLE"}


def log_lines(client, job_id):
    """What the controller's log service holds under the job's prefix, per task key."""
    try:
        from finelog.rpc import logging_pb2
        from finelog.rpc.logging_connect import LogServiceClientSync
    except ImportError:
        return None
    found = client.list_endpoints(controller_pb2.Controller.ListEndpointsRequest(
        prefix="/system/log-server", exact=True))
    if not found.endpoints:
        return None
    address = found.endpoints[0].address
    if "://" not in address:
        address = "http://" + address
    logs = LogServiceClientSync(address)
    answer = logs.fetch_logs(logging_pb2.FetchLogsRequest(
        source=job_id + "/", match_scope=logging_pb2.MATCH_SCOPE_PREFIX, max_lines=100000))
    out = {}
    for e in answer.entries:
        out.setdefault(e.key, []).append([e.source, e.data])
    return out


def big_file(size):
    """`size` bytes of numbered lines: any byte out of place shows."""
    out = b"".join(b"line %d\n" % i for i in range(size // 5 + 1))
    return out[:size]


def main():
    p = argparse.ArgumentParser()
    p.add_argument("port", type=int)
    p.add_argument("name")
    p.add_argument("replicas", type=int)
    p.add_argument("--files", default="")
    p.add_argument("--big-file", default="")
    p.add_argument("--bundle", default="")
    p.add_argument("--setup", action="append", default=[])
    p.add_argument("--constraint", action="append", default=[])
    p.add_argument("--terminate-after", type=float, default=None)
    p.add_argument("--wait", type=float, default=60)
    p.add_argument("argv", nargs="+")
    args = p.parse_args()
    client = ControllerServiceClientSync(address=f"http://127.0.0.1:{args.port}")
    files = {}
    for item in filter(None, args.files.split(",")):
        k, v = item.split("=", 1)
        files[k] = v.encode()
    if args.big_file:
        name, size = args.big_file.split("=", 1)
        files[name] = big_file(int(size))
    bundle = b""
    if args.bundle:
        buf = io.BytesIO()
        with zipfile.ZipFile(buf, "w") as z:
            for item in args.bundle.split(","):
                k, v = item.split("=", 1)
                z.writestr(k, v)
        bundle = buf.getvalue()
    request = controller_pb2.Controller.LaunchJobRequest(
        name=args.name,
        entrypoint=job_pb2.RuntimeEntrypoint(
            run_command=job_pb2.CommandEntrypoint(argv=args.argv), workdir_files=files,
            setup_commands=args.setup),
        bundle_blob=bundle,
        resources=job_pb2.ResourceSpecProto(cpu_millicores=100, memory_bytes=64 << 20),
        replicas=args.replicas,
        constraints=[
            job_pb2.Constraint(key=k, op=job_pb2.CONSTRAINT_OP_EQ,
                               value=job_pb2.AttributeValue(string_value=v))
            for k, v in (c.split("=", 1) for c in args.constraint)],
        max_retries_preemption=5,
        client_revision_date=datetime.date.today().isoformat(),
    )
    start = time.time()
    job_id = client.launch_job(request).job_id
    terminated = False
    state = None
    while time.time() - start < args.wait:
        status = client.get_job_status(controller_pb2.Controller.GetJobStatusRequest(job_id=job_id))
        state = job_pb2.JobState.Name(status.job.state)
        if state in TERMINAL:
            break
        if (args.terminate_after is not None and not terminated
                and time.time() - start >= args.terminate_after):
            client.terminate_job(controller_pb2.Controller.TerminateJobRequest(job_id=job_id))
            terminated = True
        time.sleep(0.05)
    elapsed = time.time() - start
    tasks = client.list_tasks(controller_pb2.Controller.ListTasksRequest(job_id=job_id)).tasks
    # Logs arrive at most a second behind; give them that.
    time.sleep(1.5)
    print(json.dumps({
        "job": job_id,
        "state": state,
        "seconds": round(elapsed, 3),
        "launched_ms": int(start * 1000),
        "tasks": [{"id": t.task_id, "state": job_pb2.TaskState.Name(t.state),
                   "exit_code": t.exit_code, "error": t.error,
                   "attempts": len(t.attempts),
                   "started_ms": t.started_at.epoch_ms, "finished_ms": t.finished_at.epoch_ms}
                  for t in tasks],
        "logs": log_lines(client, job_id),
    }))


if __name__ == "__main__":
    sys.exit(main())
