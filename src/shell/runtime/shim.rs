//! The task shim: `iris-worker shim --parent-pid P -- ARGV...`.
//!
//! The process runtime starts every task through this shim, which leads the task's process group
//! and owns everything the task starts. It is a child subreaper (PR_SET_CHILD_SUBREAPER), so a
//! process that leaves the group (`setsid`, a double fork, a daemon) is re-parented to the shim,
//! not to init: the task's descendants are exactly the shim's descendants by parent pid.
//!
//! * The main process exits: the shim SIGKILLs every remaining descendant and reaps them (as a
//!   container ends when its PID 1 exits), then exits the way the main process did (same code, or
//!   same signal), so the worker sees the task's own exit status at once.
//! * SIGTERM, SIGINT, SIGHUP, SIGQUIT: passed on to every descendant. The worker sends a kill's
//!   SIGTERM to the shim alone, never to the group, so each process gets it once.
//! * SIGUSR2: the worker's SIGKILL step. The shim SIGKILLs every descendant, so the worker never
//!   SIGKILLs the shim before it has cleaned up.
//! * SIGUSR1 (PR_SET_PDEATHSIG): the worker died; every descendant is SIGKILLed, then the shim.
//!
//! Signals are blocked and taken with `sigwaitinfo`, so a signal that arrives before the fork is
//! not lost. A TERM that arrives before the shim has blocked signals kills the shim before the
//! task exists, which is what the kill asked for. No privileges, cgroups or namespaces are needed.
//!
//! The shim runs before any async runtime exists, single-threaded, so `fork` is safe here.

use std::ffi::CString;

/// The signal the worker sends for a kill's SIGKILL step.
pub const KILL_ALL: libc::c_int = libc::SIGUSR2;

/// Signals the shim waits for instead of letting them act.
pub const WAITED: [libc::c_int; 7] = [
    libc::SIGUSR1,
    KILL_ALL,
    libc::SIGCHLD,
    libc::SIGTERM,
    libc::SIGINT,
    libc::SIGHUP,
    libc::SIGQUIT,
];

pub fn signal_set() -> libc::sigset_t {
    // SAFETY: sigemptyset/sigaddset initialise and fill a set we own.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut set);
        for sig in WAITED {
            libc::sigaddset(&mut set, sig);
        }
        set
    }
}

/// Every process below the shim, by parent pid (orphans come to the shim: it is a subreaper).
fn descendants() -> Vec<libc::pid_t> {
    let me = std::process::id() as libc::pid_t;
    let parents: Vec<(libc::pid_t, libc::pid_t)> = std::fs::read_dir("/proc")
        .into_iter()
        .flatten()
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse::<libc::pid_t>().ok())
        .filter_map(|pid| Some((pid, parent_of(pid)?)))
        .collect();
    let mut found = vec![me];
    let mut next = 0;
    while next < found.len() {
        let parent = found[next];
        found.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        next += 1;
    }
    found.remove(0);
    found
}

/// The parent pid from /proc/PID/stat (the field after the parenthesised command name).
fn parent_of(pid: libc::pid_t) -> Option<libc::pid_t> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    let rest = &stat[stat.rfind(')')? + 2..];
    rest.split_whitespace().nth(1)?.parse().ok()
}

fn signal_descendants(sig: libc::c_int) {
    for pid in descendants() {
        // SAFETY: signalling our own descendants; ESRCH (gone meanwhile) is fine.
        unsafe { libc::kill(pid, sig) };
    }
}

/// SIGKILLs descendants and reaps children until none is left (a dying process may have forked
/// one more; it comes to us and is killed on the next round).
fn kill_all_descendants() {
    loop {
        // Reap what has ended; with no child left there is no descendant either, so a task
        // that left nothing behind costs no /proc scan.
        loop {
            let mut status = 0;
            // SAFETY: reaping our own children.
            match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
                0 => break,
                -1 => return,
                _ => {}
            }
        }
        signal_descendants(libc::SIGKILL);
        std::thread::sleep(std::time::Duration::from_millis(5));
    }
}

/// The worker died: take the task with us.
fn kill_all_and_die() -> ! {
    kill_all_descendants();
    // SAFETY: exiting without running destructors, as a killed process would.
    unsafe { libc::_exit(137) }
}

/// Runs the shim; never returns. `argv` is the task's command line.
pub fn run(parent_pid: i32, argv: &[String]) -> ! {
    if argv.is_empty() {
        eprintln!("iris-worker shim: no command given");
        std::process::exit(127);
    }
    let args: Vec<CString> = match argv.iter().map(|a| CString::new(a.as_bytes())).collect() {
        Ok(args) => args,
        Err(_) => {
            eprintln!("iris-worker shim: argument contains NUL");
            std::process::exit(127);
        }
    };
    let set = signal_set();
    // SAFETY: plain syscalls on values we own; the child only calls async-signal-safe functions
    // (sigprocmask, prctl, execvp, write, _exit) between fork and exec.
    unsafe {
        libc::sigprocmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGUSR1 as libc::c_ulong);
        libc::prctl(libc::PR_SET_CHILD_SUBREAPER, 1 as libc::c_ulong);
        // The worker may have died before the prctl took effect.
        if libc::getppid() != parent_pid {
            eprintln!("iris-worker shim: parent {parent_pid} is gone; not starting the task");
            libc::_exit(137);
        }
        let child = libc::fork();
        if child < 0 {
            eprintln!(
                "iris-worker shim: fork failed: {}",
                std::io::Error::last_os_error()
            );
            std::process::exit(127);
        }
        if child == 0 {
            exec_child(&args, &set);
        }
        let status = wait_for(child, &set);
        // Whatever the main process left behind goes with it.
        kill_all_descendants();
        exit_like(status)
    }
}

/// In the forked child: restore signals, die with the shim, become the task.
unsafe fn exec_child(args: &[CString], set: &libc::sigset_t) -> ! {
    let mut argv: Vec<*const libc::c_char> = args.iter().map(|a| a.as_ptr()).collect();
    argv.push(std::ptr::null());
    // SAFETY: async-signal-safe calls only; argv is NUL-terminated and outlives execvp.
    unsafe {
        libc::sigprocmask(libc::SIG_UNBLOCK, set, std::ptr::null_mut());
        libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL as libc::c_ulong);
        libc::execvp(argv[0], argv.as_ptr());
        let msg = b"iris-worker shim: exec failed: command not found or not executable\n";
        libc::write(2, msg.as_ptr().cast(), msg.len());
        libc::_exit(127)
    }
}

/// Waits for the main process, reaping every other child that ends meanwhile and passing the
/// worker's signals on to every descendant.
unsafe fn wait_for(child: libc::pid_t, set: &libc::sigset_t) -> libc::c_int {
    loop {
        if let Some(status) = reap(child) {
            return status;
        }
        // SAFETY: sigwaitinfo on a set we own, signals to our own descendants.
        let sig = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::sigwaitinfo(set, &mut info)
        };
        match sig {
            libc::SIGUSR1 => kill_all_and_die(),
            KILL_ALL => signal_descendants(libc::SIGKILL),
            libc::SIGCHLD | -1 => {}
            forwarded => signal_descendants(forwarded),
        }
    }
}

/// Reaps every child that has ended; the main process's status once it is among them.
fn reap(main: libc::pid_t) -> Option<libc::c_int> {
    loop {
        let mut status = 0;
        // SAFETY: reaping our own children.
        match unsafe { libc::waitpid(-1, &mut status, libc::WNOHANG) } {
            pid if pid == main => return Some(status),
            pid if pid > 0 => continue,
            _ => return None,
        }
    }
}

/// Exits with the task's code, or dies of the task's signal.
unsafe fn exit_like(status: libc::c_int) -> ! {
    if libc::WIFEXITED(status) {
        std::process::exit(libc::WEXITSTATUS(status));
    }
    let sig = libc::WTERMSIG(status);
    // SAFETY: resetting the disposition and raising on ourselves.
    unsafe {
        let no_core = libc::rlimit {
            rlim_cur: 0,
            rlim_max: 0,
        };
        libc::setrlimit(libc::RLIMIT_CORE, &no_core);
        libc::signal(sig, libc::SIG_DFL);
        let mut only: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut only);
        libc::sigaddset(&mut only, sig);
        libc::sigprocmask(libc::SIG_UNBLOCK, &only, std::ptr::null_mut());
        libc::raise(sig);
        libc::_exit(128 + sig)
    }
}
