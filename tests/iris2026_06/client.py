"""Runs jobs the way Iris's users do, with Iris's own client (marin-iris 0.2.20 from PyPI):
`IrisClient.remote(...).submit(Entrypoint.from_callable(...))`, child jobs from inside a task,
a `WorkerPool`, named ports, and the `iris job run` CLI. For tests/iris_2026_06.rs: each scenario
prints one JSON line `{"scenario", "state", ...what it saw}`; a scenario that raises prints its
error instead, and the others still run.

usage: client.py CONTROLLER_URL WORKSPACE_DIR SCENARIO...
       (SCENARIO: callable, callable_again, raises, command, replicas, child, pool, port, cli,
        pip_package, wait_worker)

IRIS_TEST_PARALLEL=1 submits every scenario at once (their results still print in order).

The client stamps its build date on submissions and the controller refuses one older than 14
days: the stamp is today's, as a current client's would be (also inside tasks that submit).
"""
import concurrent.futures
import datetime
import json
import os
import subprocess
import sys
import time
import traceback
from pathlib import Path

import iris.version

iris.version._CACHED = datetime.date.today().isoformat()

from iris.client.client import IrisClient, iris_ctx  # noqa: E402
from iris.client.worker_pool import WorkerPool, WorkerPoolConfig  # noqa: E402
from iris.cluster.client.job_info import get_job_info  # noqa: E402
from iris.cluster.types import Entrypoint, EnvironmentSpec, ResourceSpec  # noqa: E402
from iris.rpc import job_pb2  # noqa: E402

RESOURCES = ResourceSpec(cpu=0.1, memory="128m")
WAIT = float(os.environ.get("IRIS_TEST_JOB_WAIT", "180"))
# The docker runtime's task image (python3 + uv); empty: the cluster's default.
TASK_IMAGE = os.environ.get("IRIS_TEST_TASK_IMAGE") or None


def state_name(status):
    return job_pb2.JobState.Name(status.state)


def lines(client, job):
    """What the controller's log service holds for the job (Iris's own log path), by task."""
    time.sleep(1.5)  # logs are pushed at most a second behind the state
    return [e.data for e in client.fetch_task_logs(job.job_id)]


def run(client, name, entrypoint, **kw):
    kw.setdefault("task_image", TASK_IMAGE)
    job = client.submit(entrypoint, name, kw.pop("resources", RESOURCES), **kw)
    start = time.time()
    try:
        status = job.wait(timeout=WAIT, poll_interval=0.2, raise_on_failure=False)
    except TimeoutError:
        status = job.status()  # still running or pending: what the controller says of it
    return job, status, time.time() - start


def summary(client, job, status, seconds, **extra):
    tasks = client.list_tasks(job.job_id)
    return {
        "state": state_name(status),
        "error": status.error,
        "seconds": round(seconds, 3),
        "task_errors": [t.error for t in tasks],
        "task_exit_codes": [t.exit_code for t in tasks],
        "logs": lines(client, job),
        **extra,
    }


# Task bodies: functions of __main__, so cloudpickle sends them by value.

def say_hello():
    print("hello from a callable", flush=True)


def raise_boom():
    raise ValueError("boom-2718")


def report_job_info():
    info = get_job_info()
    print(f"job-info index={info.task_index} of={info.num_tasks} job={info.job_id} region={info.worker_region}",
          flush=True)


def submit_child(stamp):
    import iris.version as v

    v._CACHED = stamp
    from iris.client.client import iris_ctx
    from iris.cluster.types import Entrypoint, ResourceSpec

    def child():
        import os

        print("child sees PARENT_SECRET=" + os.environ.get("PARENT_SECRET", "<unset>"), flush=True)

    client = iris_ctx().client
    job = client.submit(Entrypoint.from_callable(child), "child", ResourceSpec(cpu=0.1, memory="128m"))
    status = job.wait(timeout=120, poll_interval=0.2, raise_on_failure=False)
    from iris.rpc import job_pb2

    print("child ended " + job_pb2.JobState.Name(status.state) + " as " + str(job.job_id), flush=True)


def bind_named_port():
    import socket

    info = get_job_info()
    port = info.ports["web"]
    host = os.environ["IRIS_BIND_HOST"]
    with socket.socket() as s:
        s.bind((host, port))
        s.listen()
        print(f"bound web port {port} on {host}, advertised {info.advertise_host}", flush=True)


def import_toolz():
    import toolz

    print("toolz " + toolz.__version__ + " from " + toolz.__file__, flush=True)


def square(x):
    return x * x


# Scenarios.

def scenario_callable(client, _ws):
    job, status, secs = run(client, "callable", Entrypoint.from_callable(say_hello))
    return summary(client, job, status, secs)


def scenario_callable_again(client, _ws):
    """The same callable again: what a warm worker (its caches filled) takes."""
    job, status, secs = run(client, "callable-again", Entrypoint.from_callable(say_hello))
    return summary(client, job, status, secs)


def scenario_wait_worker(client, _ws):
    """Until the controller has a healthy worker (benchmarks time jobs, not start-ups)."""
    start = time.time()
    while time.time() - start < WAIT:
        if any(w.healthy for w in client.list_workers()):
            return {"state": "ready", "seconds": round(time.time() - start, 3)}
        time.sleep(0.2)
    return {"state": "no worker", "seconds": round(time.time() - start, 3)}


def scenario_raises(client, _ws):
    job, status, secs = run(client, "raises", Entrypoint.from_callable(raise_boom))
    return summary(client, job, status, secs)


def scenario_command(client, _ws):
    ep = Entrypoint.from_command("sh", "-c", "echo from a command in $IRIS_WORKDIR")
    job, status, secs = run(client, "command", ep)
    return summary(client, job, status, secs)


def scenario_replicas(client, _ws):
    job, status, secs = run(client, "replicas", Entrypoint.from_callable(report_job_info), replicas=2)
    return summary(client, job, status, secs, job_id=str(job.job_id))


def scenario_child(client, _ws):
    stamp = iris.version._CACHED
    env = EnvironmentSpec(env_vars={"PARENT_SECRET": "tok-31415"})
    job, status, secs = run(client, "parent", Entrypoint.from_callable(submit_child, stamp), environment=env)
    from iris.cluster.types import JobName

    children = [j.job_id for j in client.list_jobs(prefix=job.job_id.to_wire() + "/")]
    child_logs = [e.data for c in children for e in client.fetch_task_logs(JobName.from_wire(c))]
    return summary(client, job, status, secs, children=children, child_logs=child_logs)


def scenario_pool(client, _ws):
    start = time.time()
    config = WorkerPoolConfig(num_workers=2, resources=RESOURCES, name_prefix="pool")
    with WorkerPool(client, config, timeout=120.0) as pool:
        results = [f.result(timeout=120) for f in pool.map(square, range(6))]
    return {"state": "JOB_STATE_SUCCEEDED", "results": results, "seconds": round(time.time() - start, 3)}


def scenario_port(client, _ws):
    job, status, secs = run(client, "port", Entrypoint.from_callable(bind_named_port), ports=["web"])
    return summary(client, job, status, secs)


def scenario_pip_package(client, _ws):
    env = EnvironmentSpec(pip_packages=["toolz==1.0.0"])
    job, status, secs = run(client, "pip-package", Entrypoint.from_callable(import_toolz), environment=env)
    return summary(client, job, status, secs)


def scenario_cli(client, ws):
    """`iris job run` from Iris's CLI, in the workspace (it bundles the cwd)."""
    url = client_url
    stamp = iris.version._CACHED
    code = (
        "import sys, iris.version as v; v._CACHED = sys.argv.pop(1); "
        "from iris.cli import iris; sys.argv[0] = 'iris'; iris()"
    )
    argv = [sys.executable, "-c", code, stamp, "--controller-url", url, "job", "run",
            "--job-name", "cli-run", "--memory", "256MB"]
    argv += ["--task-image", TASK_IMAGE] if TASK_IMAGE else []
    argv += ["--", "sh", "-c", "echo from iris job run"]
    start = time.time()
    out = subprocess.run(argv, cwd=ws, capture_output=True, text=True, timeout=WAIT)
    return {
        "state": "JOB_STATE_SUCCEEDED" if out.returncode == 0 else "exit %d" % out.returncode,
        "seconds": round(time.time() - start, 3),
        "output": (out.stdout + out.stderr)[-4000:],
    }


def iris_cli(*args, cwd=None):
    """Iris's own CLI (`iris --controller-url URL ...`), as a user runs it."""
    code = (
        "import sys, iris.version as v; v._CACHED = sys.argv.pop(1); "
        "from iris.cli import iris; sys.argv[0] = 'iris'; iris()"
    )
    argv = [sys.executable, "-c", code, iris.version._CACHED, "--controller-url", client_url, *args]
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=WAIT)


def scenario_process_status(client, _ws):
    """`iris process status --target /system/worker/<id> --json` for the (one) worker."""
    worker = client.list_workers()[0].worker_id
    out = iris_cli("process", "status", "--target", f"/system/worker/{worker}", "--json")
    try:
        info = json.loads(out.stdout)
    except ValueError:
        info = None
    # The worker's own threads, as the dashboard's worker page asks for them.
    threads = iris_cli("process", "profile", "--target", f"/system/worker/{worker}", "threads")
    return {
        "state": "exit %d" % out.returncode,
        "info": info,
        "stderr": out.stderr[-2000:],
        "self_threads": threads.stdout[-4000:],
        "self_threads_err": threads.stderr[-2000:],
    }


def grow_here(held):
    held.append(bytearray(256 * 1024))
    if len(held) > 64:
        held.pop(0)


def scenario_worker_log(client, _ws):
    """`iris process logs --target /system/worker/<id>`: the worker's own log in the log
    service, as Iris's worker ships it (all of it, and from WARNING up)."""
    worker = client.list_workers()[0].worker_id
    target = f"/system/worker/{worker}"
    deadline, out = time.time() + 30, None
    while time.time() < deadline:
        out = iris_cli("process", "logs", "--target", target, "--max-lines", "1000")
        if " serving " in out.stdout:
            break
        time.sleep(1)
    warnings = iris_cli("process", "logs", "--target", target, "--level", "WARNING", "--max-lines", "1000")
    return {
        "state": "exit %d" % out.returncode,
        "worker": worker,
        "lines": out.stdout.splitlines()[-200:],
        "warnings": warnings.stdout.splitlines()[-200:],
        "stderr": out.stderr[-2000:],
    }


def spin_here():
    held, n = [], 0
    while True:
        n += 1
        if n % 20000 == 0:  # allocates steadily, for memory profiles
            grow_here(held)


def scenario_profile(client, ws):
    """`iris process profile --target /<job>/0 threads` and `cpu` on a busy callable."""
    # A whole core: the profilers run inside the task's cgroup, and memray's gdb attach at the
    # 0.1 core a spinning task leaves it takes longer than the CLI's 30 s.
    resources = ResourceSpec(cpu=1, memory="512m")
    job = client.submit(Entrypoint.from_callable(spin_here), "profile-target", resources, task_image=TASK_IMAGE)
    deadline = time.time() + WAIT
    while time.time() < deadline and client.list_tasks(job.job_id)[0].state != job_pb2.TASK_STATE_RUNNING:
        time.sleep(0.2)
    time.sleep(1)  # the callable is running Python by now
    target = f"{job.job_id}/0"
    threads = iris_cli("process", "profile", "--target", target, "threads")
    out = str(Path(ws) / "cpu-profile.json")
    cpu = iris_cli("process", "profile", "--target", target, "cpu", "-d", "2", "-o", out)
    mem_out = str(Path(ws) / "mem-profile.html")
    mem = iris_cli("process", "profile", "--target", target, "mem", "-d", "3", "-o", mem_out)
    mem_data = Path(mem_out).read_text(errors="replace") if Path(mem_out).exists() else ""
    # What the dashboard lists: the profiles kept in `iris.profile`, on demand and (when the
    # worker takes them, IRIS_TEST_PERIODIC=1) periodic.
    wanted = {"on_demand:thread", "on_demand:cpu", "on_demand:memory"}
    if os.environ.get("IRIS_TEST_PERIODIC") == "1":
        wanted.add("periodic:cpu")
    if "is not installed" in threads.stderr:
        wanted = set()  # no profiler in the task: nothing to keep
    rows, until, error = [], time.time() + 60, None
    while time.time() < until:
        try:
            rows, error = [], None
            data = "CAST(profile_data AS VARCHAR)"
            rows = stats_query(
                "SELECT source, attempt_id, vm_id, type, format, trigger, rate_hz, duration_seconds,"
                f" octet_length({data}) AS bytes,"
                f" (position('spin_here' IN {data}) > 0 OR position('grow_here' IN {data}) > 0) AS names_spin"
                f" FROM \"iris.profile\" WHERE source = '{job.job_id}/0'"
            )
        except Exception as e:  # not registered yet, or the query failed: say so if it lasts
            error = repr(e)
        if wanted <= {f"{r['trigger']}:{r['type']}" for r in rows}:
            break
        time.sleep(1)
    client.terminate(job.job_id)
    cpu_data = Path(out).read_text() if Path(out).exists() else ""
    return {
        "state": "ran",
        "task": target,
        "worker": client.list_tasks(job.job_id)[0].worker_id,
        "profile_rows": rows,
        "profile_rows_error": error,
        "threads": threads.stdout[-4000:],
        "threads_err": threads.stderr[-2000:],
        "cpu_has_spin": "spin_here" in cpu_data,
        "mem_has_grow": "grow_here" in mem_data,
        "mem_bytes": len(mem_data),
        "mem_err": mem.stderr[-2000:],
        "cpu_err": cpu.stderr[-2000:],
        "cpu_bytes": len(cpu_data),
    }


def scenario_exec(client, _ws):
    """`iris task exec` into a running task: its output, stderr and exit code come back; a
    task that has finished says so."""
    ep = Entrypoint.from_command("sh", "-c", "echo exec-target up; sleep 120")
    job = client.submit(ep, "exec-target", RESOURCES, task_image=TASK_IMAGE)
    deadline = time.time() + WAIT
    while time.time() < deadline and client.list_tasks(job.job_id)[0].state != job_pb2.TASK_STATE_RUNNING:
        time.sleep(0.2)
    task = f"{job.job_id}/0"
    start = time.time()
    ran = iris_cli("task", "exec", task, "--", "sh", "-c", 'echo "in $PWD as $IRIS_TASK_ID"; echo oops >&2; exit 3')
    seconds = time.time() - start
    client.terminate(job.job_id)
    job.wait(timeout=WAIT, poll_interval=0.2, raise_on_failure=False)
    after = iris_cli("task", "exec", task, "--", "true")
    return {
        "state": "ran",
        "seconds": round(seconds, 3),
        "stdout": ran.stdout,
        "stderr": ran.stderr[-2000:],
        "exit_code": ran.returncode,
        "after_stderr": after.stderr[-2000:],
        "after_exit_code": after.returncode,
    }


# What a TPU task sees of its container: the TPU variables, its locked-memory limit (KiB), its
# /dev/shm (KiB), its effective capabilities, and whether it shares the host's network (the
# host's docker0 is visible).
TPU_PROBE = (
    'echo "tpu task=$IRIS_TASK_ID worker=$IRIS_WORKER_ID jax=$JAX_PLATFORMS pjrt=$PJRT_DEVICE'
    ' init=$JAX_FORCE_TPU_INIT slices=${IRIS_SLICE_COUNT:-none}'
    " memlock=$(ulimit -l) shm=$(df -k /dev/shm | tail -1 | awk '{print $2}')"
    " cap=$(grep CapEff /proc/self/status | awk '{print $2}')"
    ' hostnet=$(grep -c docker0 /proc/net/dev)"'
)


def scenario_tpu_slice(client, _ws):
    from iris.cluster.types import CoschedulingConfig, tpu_device

    resources = ResourceSpec(**TPU_RESOURCES, device=tpu_device("v5litepod-16"))
    job, status, secs = run(
        client,
        "tpu-slice",
        Entrypoint.from_command("sh", "-c", TPU_PROBE),
        resources=resources,
        replicas=4,
        coscheduling=CoschedulingConfig(group_by="tpu-name"),
    )
    tasks = client.list_tasks(job.job_id)
    return summary(
        client,
        job,
        status,
        secs,
        task_workers=[t.worker_id for t in tasks],
        pending_reason=status.pending_reason,
    )


TPU_RESOURCES = dict(cpu=0.1, memory="128m")


def tpu_resources():
    from iris.cluster.types import tpu_device

    return ResourceSpec(**TPU_RESOURCES, device=tpu_device("v5litepod-16"))


def attempts_of(task):
    return [
        {
            "worker_id": a.worker_id,
            "state": job_pb2.TaskState.Name(a.state),
            "error": a.error,
            "is_worker_failure": a.is_worker_failure,
        }
        for a in task.attempts
    ]


def scenario_bad_chip(client, _ws):
    """A task whose TPU will not initialise: the machine's failure, not the user's."""
    line = "RuntimeError: TPU initialization failed: open(/dev/vfio/0): Device or resource busy"
    ep = Entrypoint.from_command("sh", "-c", f"echo '{line}' >&2; exit 1")
    job, status, secs = run(client, "bad-chip", ep, resources=tpu_resources(), max_retries_preemption=0)
    tasks = client.list_tasks(job.job_id)
    return summary(client, job, status, secs, attempts=[attempts_of(t) for t in tasks])


def scenario_preempt(client, _ws):
    """A running TPU task whose VM the test preempts (it prints `{"running_on": worker}` for
    the test to flip that VM's metadata): how fast the controller hears of it and what it does
    with the task. The job spans the slice (Iris's client makes one task per VM), so there is
    no other VM free: the task goes back to pending on its preemption budget."""
    ep = Entrypoint.from_command("sh", "-c", "echo started on $IRIS_WORKER_ID; sleep 600")
    job = client.submit(ep, "preempt", tpu_resources(), task_image=TASK_IMAGE, max_retries_preemption=3)
    running = job_pb2.TASK_STATE_RUNNING
    deadline = time.time() + WAIT
    task = None
    while time.time() < deadline:
        task = client.list_tasks(job.job_id)[0]
        if task.state == running:
            break
        time.sleep(0.2)
    first = task.worker_id
    print(json.dumps({"running_on": first}), flush=True)
    flipped = time.time()
    ended = None
    while time.time() < deadline:
        task = client.list_tasks(job.job_id)[0]
        if ended is None and any(a.worker_id in (first, "") and a.state != running for a in task.attempts):
            ended = time.time() - flipped
        if ended is not None and task.state != running:
            break
        if task.state == running and task.worker_id != first:
            break
        time.sleep(0.1)
    client.terminate(job.job_id)
    return {
        "state": job_pb2.TaskState.Name(task.state),
        "first": first,
        "num_tasks": len(client.list_tasks(job.job_id)),
        "seconds_to_end": ended,
        "attempts": attempts_of(task),
    }


def scenario_log_levels(client, _ws):
    """Lines logged with Python's logging and in Iris's own format arrive with their level."""
    script = "import logging; logging.warning('careful now'); logging.error('it broke')"
    ep = Entrypoint.from_command(
        "sh", "-c", f'$IRIS_PYTHON -c "{script}"; echo "E20261207 12:00:00 1 app in iris form"; echo plain'
    )
    job, status, secs = run(client, "log-levels", ep)
    time.sleep(1.5)
    at_least = {
        level: [e.data for e in client.fetch_task_logs(job.job_id, min_level=level)]
        for level in ("WARNING", "ERROR")
    }
    return summary(client, job, status, secs, at_least=at_least)


def stats_query(sql):
    """The log service's stats tables as Iris's dashboard reads them: `Query` through the
    controller's endpoint proxy (`/proxy/system.log-server/finelog.stats.StatsService/...`)."""
    import pyarrow.ipc
    from finelog.rpc import finelog_stats_pb2
    from finelog.rpc.finelog_stats_connect import StatsServiceClientSync

    with StatsServiceClientSync(f"{client_url}/proxy/system.log-server") as stats:
        reply = stats.query(finelog_stats_pb2.QueryRequest(sql=sql))
    return pyarrow.ipc.open_stream(reply.arrow_ipc).read_all().to_pylist()


def busy_and_big():
    """About 80 MB held and a core kept busy for a minute (what the stats rows must show)."""
    held = bytearray(80 * 1024 * 1024)
    for i in range(0, len(held), 4096):
        held[i] = 1
    end = time.time() + 60
    while time.time() < end:
        pass
    return len(held)


def scenario_stats(client, _ws):
    """A busy task's `iris.task` rows and its worker's `iris.worker` rows, read back from the
    log service as the controller's dashboard reads them; how long after RUNNING the first
    task row with CPU and memory was there."""
    resources = ResourceSpec(cpu=0.5, memory="512m")
    job = client.submit(Entrypoint.from_callable(busy_and_big), "stats-target", resources, task_image=TASK_IMAGE)
    deadline = time.time() + WAIT
    while time.time() < deadline and client.list_tasks(job.job_id)[0].state != job_pb2.TASK_STATE_RUNNING:
        time.sleep(0.2)
    running_at, task = time.time(), f"{job.job_id}/0"
    rows, seen_after, error = [], None, None
    while time.time() < running_at + 60:
        try:
            rows = stats_query(
                "SELECT task_id, attempt_id, worker_id, ts, cpu_millicores,"
                f" memory_mb, memory_peak_mb, disk_mb FROM \"iris.task\" WHERE task_id = '{task}' ORDER BY ts"
            )
        except Exception as e:  # not registered yet, or the query failed: say so if it lasts
            error = repr(e)
        for r in rows:  # finelog's TIMESTAMP_MS comes back a naive UTC datetime
            r["ts_ms"] = int(r.pop("ts").replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)
        if seen_after is None and any(r["memory_mb"] > 0 for r in rows):
            seen_after, error = time.time() - running_at, None
        if any(r["memory_mb"] >= 80 and r["cpu_millicores"] > 0 for r in rows):
            break  # the callable holds its 80 MB and spins by now
        time.sleep(0.5)
    worker = client.list_tasks(job.job_id)[0].worker_id
    workers = stats_query(
        "SELECT worker_id, status, address, cpu_pct, mem_bytes, mem_total_bytes, disk_total_bytes,"
        " running_task_count, cpu_count, memory_bytes, net_recv_bytes"
        f" FROM \"iris.worker\" WHERE worker_id = '{worker}' ORDER BY ts DESC LIMIT 5"
    )
    client.terminate(job.job_id)
    return {
        "state": "ran",
        "task": task,
        "worker": worker,
        "seconds_to_first_row": None if seen_after is None else round(seen_after, 2),
        "task_rows": rows[-5:],
        "worker_rows": workers,
        "error": error,
    }


def scenario_outage(client, ws):
    """A task printing `OUTAGE_LINES` numbered lines over 50 s while the test takes the log
    service away: `<ws>/outage-running` says it runs, `<ws>/outage-over` that the service is
    back. Then what reached the log service: which lines are missing or doubled, and the times
    of the stats rows written for the task and its worker."""
    n = int(os.environ.get("OUTAGE_LINES", "500"))
    ep = Entrypoint.from_command("sh", "-c", f"for i in $(seq 1 {n}); do echo outage-line-$i; sleep 0.1; done")
    job = client.submit(ep, "outage", RESOURCES, task_image=TASK_IMAGE)
    deadline = time.time() + WAIT
    while time.time() < deadline and client.list_tasks(job.job_id)[0].state != job_pb2.TASK_STATE_RUNNING:
        time.sleep(0.2)
    (Path(ws) / "outage-running").touch()
    status = job.wait(timeout=WAIT, poll_interval=0.5, raise_on_failure=False)
    while time.time() < deadline and not (Path(ws) / "outage-over").exists():
        time.sleep(0.2)
    task, worker = f"{job.job_id}/0", client.list_tasks(job.job_id)[0].worker_id
    want = [f"outage-line-{i}" for i in range(1, n + 1)]
    got, rows, workers = [], [], []
    until = time.time() + 60  # the writers back off up to 30 s after a failure
    while time.time() < until:
        got = [e.data for e in client.fetch_task_logs(job.job_id) if e.data.startswith("outage-line-")]
        try:
            rows = stats_query(f"SELECT ts FROM \"iris.task\" WHERE task_id = '{task}'")
            workers = stats_query(f"SELECT ts FROM \"iris.worker\" WHERE worker_id = '{worker}'")
        except Exception:
            pass
        if got == want and rows:
            break
        time.sleep(1)

    def ms(r):
        return int(r["ts"].replace(tzinfo=datetime.timezone.utc).timestamp() * 1000)

    return {
        "state": state_name(status),
        "lines": len(got),
        "missing": sorted(set(want) - set(got), key=want.index)[:20],
        "doubled": len(got) - len(set(got)),
        "in_order": got == sorted(got, key=lambda line: int(line.rsplit("-", 1)[1])),
        "task_row_ms": sorted(ms(r) for r in rows),
        "worker_row_ms": sorted(ms(r) for r in workers),
    }


def scenario_on_worker(client, _ws):
    """`IRIS_TEST_COMMAND` (sh -c) on the worker whose attribute `IRIS_TEST_CONSTRAINT`
    (`key=value`) names, in `IRIS_TEST_TASK_IMAGE`; no retries, so the first attempt's end is
    the job's."""
    from iris.cluster.constraints import Constraint, ConstraintOp

    key, value = os.environ["IRIS_TEST_CONSTRAINT"].split("=", 1)
    ep = Entrypoint.from_command("sh", "-c", os.environ["IRIS_TEST_COMMAND"])
    constraint = Constraint.create(key=key, op=ConstraintOp.EQ, value=value)
    job, status, secs = run(
        client, f"on-{value}-{int(time.time() * 1000)}", ep, constraints=[constraint], max_retries_preemption=0
    )
    tasks = client.list_tasks(job.job_id)
    return summary(client, job, status, secs, attempts=[attempts_of(t) for t in tasks])


def scenario_workers(client, _ws):
    """The controller's view of its workers: device, attributes, health and its message."""
    from google.protobuf import json_format

    out = []
    for w in client.list_workers():
        attrs = {k: json_format.MessageToDict(v) for k, v in w.metadata.attributes.items()}
        out.append(
            {
                "worker_id": w.worker_id,
                "healthy": w.healthy,
                "status_message": w.status_message,
                "device": json_format.MessageToDict(w.metadata.device),
                "tpu_name": w.metadata.tpu_name,
                "tpu_worker_id": w.metadata.tpu_worker_id,
                "attributes": attrs,
            }
        )
    return {"state": "listed", "workers": out}


SCENARIOS = {
    name[len("scenario_"):]: fn for name, fn in list(globals().items()) if name.startswith("scenario_")
}


def main():
    global client_url
    client_url, ws = sys.argv[1], Path(sys.argv[2])
    wanted = sys.argv[3:]
    client = IrisClient.remote(client_url, workspace=ws)

    def one(name):
        try:
            return SCENARIOS[name](client, ws)
        except Exception as e:  # one scenario's failure must not hide the others
            return {"state": "raised", "error": repr(e), "traceback": traceback.format_exc()[-3000:]}

    if os.environ.get("IRIS_TEST_PARALLEL") == "1":
        # All at once, as a cluster's users submit: concurrent setups share uv's cache.
        with concurrent.futures.ThreadPoolExecutor(len(wanted)) as pool:
            results = list(pool.map(one, wanted))
    else:
        results = [one(name) for name in wanted]
    for name, result in zip(wanted, results):
        print(json.dumps({"scenario": name, **result}), flush=True)


if __name__ == "__main__":
    main()
