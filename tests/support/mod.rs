//! Helpers for tests against the real binary: a worker process on loopback and a test
//! controller implementing ControllerService.
#![allow(dead_code)]

use std::io::{BufRead, BufReader};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use iris_worker::proto;
use iris_worker::proto::controller::{
    RegisterWorkerRequest, RegisterWorkerResponse, ReportTaskStateRequest, ReportTaskStateResponse,
};
use iris_worker::proto::controller_service_server::{ControllerService, ControllerServiceServer};
use iris_worker::proto::worker_service_client::WorkerServiceClient;
use iris_worker::shell::auth::RequireToken;
use iris_worker::shell::connect::front::FrontLayer;
pub use iris_worker::shell::connect::server::Protocol;
use iris_worker::shell::routes;
use tokio::sync::oneshot;
use tonic::transport::Channel;
use tonic::{Request, Response, Status};

pub mod outage;
pub mod registry;

pub const BIN: &str = env!("CARGO_BIN_EXE_iris-worker");

pub fn temp_dir(name: &str) -> PathBuf {
    static NEXT: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
    let n = NEXT.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let dir = std::env::temp_dir().join(format!("iris-test-{name}-{}-{n}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A worker process; killed when dropped.
pub struct WorkerProcess {
    pub child: Child,
    pub addr: SocketAddr,
    /// The dashboard's base URL (`http://host:port`, the RPC port).
    pub dashboard: String,
    pub cache_dir: PathBuf,
}

impl WorkerProcess {
    pub fn start(cache_dir: &Path, extra: &[&str]) -> WorkerProcess {
        WorkerProcess::start_with_env(cache_dir, extra, &[])
    }

    pub fn start_with_env(cache_dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> WorkerProcess {
        // Each worker of a test binary gets its own port range, below the ephemeral ports, so
        // parallel tests never hand out the same port.
        static NEXT_RANGE: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NEXT_RANGE.fetch_add(1, std::sync::atomic::Ordering::Relaxed) % 200;
        let range = format!("{}-{}", 20_000 + n * 50, 20_000 + n * 50 + 49);
        let cache = cache_dir.display().to_string();
        let mut args = vec!["serve", "--port", "0", "--cache-dir", cache.as_str()];
        if !extra.contains(&"--stats-interval-ms") {
            args.extend(["--stats-interval-ms", "200"]);
        }
        if !extra.contains(&"--port-range") {
            args.extend(["--port-range", range.as_str()]);
        }
        args.extend_from_slice(extra);
        WorkerProcess::spawn_exactly(&args, env, cache_dir)
    }

    /// The binary run with exactly `args` and `env` (nothing added), as a unit or a bootstrap
    /// would start it; `cache_dir` is where those arguments put its cache.
    pub fn spawn_exactly(args: &[&str], env: &[(&str, &str)], cache_dir: &Path) -> WorkerProcess {
        let child = Command::new(BIN)
            .args(args)
            .env("RUST_LOG", "warn")
            .envs(env.iter().copied())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("spawn worker");
        WorkerProcess::from_child(child, cache_dir)
    }

    /// Waits for the "listening on" line.
    fn from_child(mut child: std::process::Child, cache_dir: &Path) -> WorkerProcess {
        let mut stdout = BufReader::new(child.stdout.take().unwrap());
        let mut line = String::new();
        stdout.read_line(&mut line).unwrap();
        let addr: SocketAddr = line
            .split_whitespace()
            .nth(3)
            .unwrap_or_else(|| panic!("no address in {line:?}"))
            .parse()
            .unwrap();
        WorkerProcess {
            child,
            addr,
            // The dashboard shares the RPC port.
            dashboard: format!("http://{addr}"),
            cache_dir: cache_dir.to_path_buf(),
        }
    }

    pub async fn client(&self) -> WorkerServiceClient<Channel> {
        WorkerServiceClient::connect(format!("http://{}", self.addr))
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20)
    }

    pub fn pid(&self) -> i32 {
        self.child.id() as i32
    }

    pub fn signal(&self, sig: i32) {
        // SAFETY: signalling our own child process.
        unsafe { libc::kill(self.pid(), sig) };
    }

    /// Peak resident memory of the worker, from /proc.
    pub fn peak_rss_kb(&self) -> u64 {
        let status = std::fs::read_to_string(format!("/proc/{}/status", self.pid())).unwrap();
        status
            .lines()
            .find(|l| l.starts_with("VmHWM:"))
            .and_then(|l| l.split_whitespace().nth(1))
            .and_then(|v| v.parse().ok())
            .unwrap()
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn command_request(task_id: &str, argv: &[&str]) -> proto::worker::RunTaskRequest {
    iris_worker::proto::worker::RunTaskRequest::for_command(task_id, 0, argv)
}

pub async fn status(client: &mut WorkerServiceClient<Channel>, task_id: &str) -> proto::TaskStatus {
    client
        .get_task_status(proto::worker::GetTaskStatusRequest {
            task_id: task_id.to_string(),
            include_result: false,
        })
        .await
        .unwrap()
        .into_inner()
}

/// Polls until the task's state satisfies `done`, or panics after `limit`.
pub async fn wait_for(
    client: &mut WorkerServiceClient<Channel>,
    task_id: &str,
    limit: Duration,
    done: impl Fn(&proto::TaskStatus) -> bool,
) -> proto::TaskStatus {
    let start = Instant::now();
    loop {
        let s = status(client, task_id).await;
        if done(&s) {
            return s;
        }
        assert!(start.elapsed() < limit, "{task_id} stuck: {s:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// Submits a command task and waits for it to finish; its final status.
pub async fn run_to_end(
    client: &mut WorkerServiceClient<Channel>,
    task_id: &str,
    argv: &[&str],
) -> proto::TaskStatus {
    client
        .run_task(command_request(task_id, argv))
        .await
        .unwrap();
    wait_for(client, task_id, Duration::from_secs(30), finished).await
}

/// Kills a task with `term_timeout_ms` and waits for it to finish: its final status and how long
/// that took from the kill.
pub async fn kill_and_wait(
    client: &mut WorkerServiceClient<Channel>,
    task_id: &str,
    term_timeout_ms: i32,
) -> (proto::TaskStatus, Duration) {
    let asked = Instant::now();
    client
        .kill_task(proto::worker::KillTaskRequest {
            task_id: task_id.to_string(),
            term_timeout_ms,
        })
        .await
        .unwrap();
    let done = wait_for(client, task_id, Duration::from_secs(30), finished).await;
    (done, asked.elapsed())
}

pub fn is_state(state: proto::TaskState) -> impl Fn(&proto::TaskStatus) -> bool {
    move |s| s.state == state as i32
}

pub fn finished(s: &proto::TaskStatus) -> bool {
    s.state >= proto::TaskState::Succeeded as i32
}

pub async fn logs(
    client: &mut WorkerServiceClient<Channel>,
    task_id: &str,
) -> Vec<proto::worker::LogEntry> {
    client
        .fetch_task_logs(proto::worker::FetchTaskLogsRequest {
            task_id: task_id.to_string(),
            filter: None,
        })
        .await
        .unwrap()
        .into_inner()
        .logs
}

pub fn stdout_of(entries: &[proto::worker::LogEntry]) -> Vec<String> {
    entries
        .iter()
        .filter(|e| e.source == "stdout")
        .map(|e| e.data.clone())
        .collect()
}

/// What the test controller saw.
#[derive(Default)]
pub struct ControllerState {
    pub registrations: Vec<RegisterWorkerRequest>,
    pub reports: Vec<ReportTaskStateRequest>,
    pub reset_next: bool,
    /// The `authorization` header of the latest call.
    pub authorization: Option<String>,
    /// The protocol of every call, in order.
    pub protocols: Vec<Protocol>,
}

#[derive(Clone, Default)]
pub struct TestController {
    pub state: Arc<Mutex<ControllerState>>,
}

#[tonic::async_trait]
impl ControllerService for TestController {
    async fn register_worker(
        &self,
        request: Request<RegisterWorkerRequest>,
    ) -> Result<Response<RegisterWorkerResponse>, Status> {
        let mut state = self.state.lock().unwrap();
        state.protocols.push(Protocol::of(&request));
        state.authorization = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        state.registrations.push(request.into_inner());
        let should_reset = std::mem::take(&mut state.reset_next);
        Ok(Response::new(RegisterWorkerResponse {
            accepted: true,
            controller_address: String::new(),
            should_reset,
        }))
    }

    async fn report_task_state(
        &self,
        request: Request<ReportTaskStateRequest>,
    ) -> Result<Response<ReportTaskStateResponse>, Status> {
        let mut state = self.state.lock().unwrap();
        state.protocols.push(Protocol::of(&request));
        state.reports.push(request.into_inner());
        Ok(Response::new(ReportTaskStateResponse {}))
    }
}

/// A running test controller; `stop` ends it (an outage), `start_on` brings one back. It serves
/// both protocols on its port, as Iris's controller serves Connect: a worker given the bare
/// address reports over Connect, one given `grpc://` over gRPC.
pub struct ControllerServer {
    pub addr: SocketAddr,
    pub controller: TestController,
    stop: Option<oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl ControllerServer {
    /// The first registration the controller got, waiting up to a minute for it.
    pub async fn first_registration(&self) -> RegisterWorkerRequest {
        let start = Instant::now();
        loop {
            if let Some(first) = self.controller.state.lock().unwrap().registrations.first() {
                return first.clone();
            }
            assert!(
                start.elapsed() < Duration::from_secs(60),
                "no worker registered"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }

    pub async fn start(controller: TestController) -> ControllerServer {
        ControllerServer::start_on("127.0.0.1:0".parse().unwrap(), controller).await
    }

    pub async fn start_on(addr: SocketAddr, controller: TestController) -> ControllerServer {
        let listener = tokio::net::TcpListener::bind(addr).await.unwrap();
        let addr = listener.local_addr().unwrap();
        let (stop, stopped) = oneshot::channel();
        let shared = Arc::new(controller.clone());
        let connect = routes::controller_router(shared.clone(), RequireToken::new(None));
        let service = ControllerServiceServer::from_arc(shared);
        let task = tokio::spawn(async move {
            tonic::transport::Server::builder()
                .accept_http1(true)
                .layer(FrontLayer::new(connect))
                .add_service(service)
                .serve_with_incoming_shutdown(
                    tokio_stream::wrappers::TcpListenerStream::new(listener),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await
                .unwrap();
        });
        ControllerServer {
            addr,
            controller,
            stop: Some(stop),
            task: Some(task),
        }
    }

    pub async fn stop(mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(task) = self.task.take() {
            task.abort();
            let _ = task.await;
        }
    }

    pub fn reports_for(&self, task_id: &str) -> Vec<ReportTaskStateRequest> {
        self.controller
            .state
            .lock()
            .unwrap()
            .reports
            .iter()
            .filter(|r| r.task_id == task_id)
            .cloned()
            .collect()
    }

    pub async fn wait_report(
        &self,
        task_id: &str,
        state: proto::TaskState,
        limit: Duration,
    ) -> ReportTaskStateRequest {
        let start = Instant::now();
        loop {
            if let Some(r) = self
                .reports_for(task_id)
                .into_iter()
                .find(|r| r.state == state as i32)
            {
                return r;
            }
            assert!(
                start.elapsed() < limit,
                "no {state:?} report for {task_id}: {:?}",
                self.reports_for(task_id)
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
}

/// Processes whose process group is `pgid`.
pub fn group_members(pgid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        let Some(rest) = stat.rfind(')').map(|i| &stat[i + 2..]) else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        // fields[0] = state; zombies are already dead.
        if fields.get(2).and_then(|p| p.parse::<i32>().ok()) == Some(pgid) && fields[0] != "Z" {
            out.push(pid);
        }
    }
    out
}

pub fn pgid_of(pid: i32) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let rest = &stat[stat.rfind(')').unwrap() + 2..];
    rest.split_whitespace().nth(2).unwrap().parse().unwrap()
}

/// A plain HTTP/1.1 GET (the tests need no HTTP client crate): status code and body.
/// An address of this machine that is neither loopback nor the one it reaches the world from
/// (a worker bound to every interface advertises that one, and a controller on loopback dials
/// it): a call to a worker there comes from it, as a call from another machine would come from
/// elsewhere. `hostname -I`'s IPv4 addresses; docker's bridge gives a machine with docker two.
pub fn outside_ip() -> std::net::IpAddr {
    let out = std::process::Command::new("hostname")
        .arg("-I")
        .output()
        .expect("hostname -I");
    let outbound = std::net::UdpSocket::bind(("0.0.0.0", 0))
        .and_then(|s| s.connect(("8.8.8.8", 80)).and_then(|()| s.local_addr()))
        .map(|a| a.ip())
        .ok();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .filter_map(|a| a.parse::<std::net::IpAddr>().ok())
        .find(|ip| ip.is_ipv4() && !ip.is_loopback() && Some(*ip) != outbound)
        .expect("this machine has a non-loopback IPv4 address besides its outbound one")
}

pub fn http_get(base: &str, path: &str, headers: &[(&str, &str)]) -> (u16, String) {
    use std::io::{Read, Write};
    let authority = base.trim_start_matches("http://");
    let mut stream = std::net::TcpStream::connect(authority).unwrap();
    let mut request = format!("GET {path} HTTP/1.1\r\nHost: {authority}\r\nConnection: close\r\n");
    for (k, v) in headers {
        request.push_str(&format!("{k}: {v}\r\n"));
    }
    request.push_str("\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut raw = Vec::new();
    stream.read_to_end(&mut raw).unwrap();
    let text = String::from_utf8_lossy(&raw).into_owned();
    let (head, body) = text.split_once("\r\n\r\n").unwrap_or((&text, ""));
    let status = head.split_whitespace().nth(1).unwrap().parse().unwrap();
    let chunked = head
        .to_ascii_lowercase()
        .contains("transfer-encoding: chunked");
    (
        status,
        if chunked {
            dechunk(body)
        } else {
            body.to_string()
        },
    )
}

fn dechunk(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let n = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if n == 0 {
            break;
        }
        out.push_str(&rest[..n]);
        body = &rest[n + 2..];
    }
    out
}

/// A named pipe at `path`: a bundle read from it blocks until the test writes it, which holds a
/// task in BUILDING for as long as the test wants.
pub fn make_fifo(path: &Path) {
    let c_path = std::ffi::CString::new(path.to_str().unwrap()).unwrap();
    // SAFETY: creating a FIFO at a path the test owns.
    assert_eq!(
        unsafe { libc::mkfifo(c_path.as_ptr(), 0o600) },
        0,
        "mkfifo {}",
        path.display()
    );
}

/// A port nobody listens on right now.
/// Waits until something listens on `port` on loopback; fails the test naming `what` after
/// `limit`.
pub fn wait_for_listener(port: u16, limit: Duration, what: &str) {
    let start = Instant::now();
    while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
        assert!(start.elapsed() < limit, "{what} did not come up");
        std::thread::sleep(Duration::from_millis(50));
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// Whether the docker engine answers and `image` exists. With CI=true and an engine socket, a
/// missing one fails the test (`scripts/docker-test-image` builds it); elsewhere `what` is said
/// not to have run.
pub fn docker_image_ready(image: &str, what: &str) -> bool {
    let socket =
        Path::new("/var/run/docker.sock").exists() || std::env::var_os("DOCKER_HOST").is_some();
    let ready = Command::new("docker")
        .args(["image", "inspect", image])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ready && socket && std::env::var("CI").as_deref() == Ok("true") {
        panic!(
            "the docker engine or the image {image} is missing; scripts/docker-test-image builds it"
        );
    }
    if !ready {
        eprintln!("NOTICE: no docker engine or no {image}: {what} did not run");
    }
    ready
}

/// Live (not zombie) processes with an environment entry `IRIS_TASK_ID=<value>` for which
/// `matches(value)` holds: what a task left running.
pub fn task_processes(matches: impl Fn(&str) -> bool) -> Vec<i32> {
    let mut found = Vec::new();
    for entry in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(pid) = entry.file_name().to_string_lossy().parse::<i32>() else {
            continue;
        };
        let Ok(environ) = std::fs::read(entry.path().join("environ")) else {
            continue;
        };
        let zombie = std::fs::read_to_string(entry.path().join("stat")).is_ok_and(|s| {
            s.rsplit(')')
                .next()
                .is_some_and(|r| r.trim_start().starts_with('Z'))
        });
        let ours = environ.split(|b| *b == 0).any(|kv| {
            std::str::from_utf8(kv)
                .ok()
                .and_then(|kv| kv.strip_prefix("IRIS_TASK_ID="))
                .is_some_and(&matches)
        });
        if ours && !zombie {
            found.push(pid);
        }
    }
    found
}
