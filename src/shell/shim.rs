//! The task shim: `iris-worker shim --parent-pid P -- ARGV...`.
//!
//! The process runtime starts every task through this shim, which leads the task's process group.
//! Its one job is that the group dies with the worker: it asks the kernel for SIGUSR1 when its
//! parent dies (PR_SET_PDEATHSIG) and then SIGKILLs the whole group, itself included. Otherwise it
//! waits for the task and exits the way the task did (same code, or same signal), so the worker
//! sees the task's own exit status. Signals the worker sends go to the whole group; the shim passes
//! the ones it receives on to the task too, because a signal that reached the group before the
//! fork would otherwise be lost (pending signals are not inherited by a forked child). A TERM that
//! arrives before the shim has blocked signals kills the shim before the task exists, which is
//! what the kill asked for.
//!
//! The shim runs before any async runtime exists, single-threaded, so `fork` is safe here.

use std::ffi::CString;

/// Signals the shim waits for instead of letting them act.
pub const WAITED: [libc::c_int; 6] = [
    libc::SIGUSR1,
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

/// The worker died: take the task with us. Only a shim that leads its own group (as the worker
/// starts it) kills the group; run by hand, it never signals its caller's group.
fn kill_group_and_die(child: libc::pid_t) -> ! {
    // SAFETY: signalling our own group (which ends us too) or our own child.
    unsafe {
        if libc::getpgrp() == libc::getpid() {
            libc::kill(0, libc::SIGKILL);
        } else if child > 0 {
            libc::kill(child, libc::SIGKILL);
        }
        libc::_exit(137)
    }
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

/// Waits for the task, ignoring the group-wide signals the worker sends.
unsafe fn wait_for(child: libc::pid_t, set: &libc::sigset_t) -> libc::c_int {
    loop {
        let mut status = 0;
        // SAFETY: waitpid and sigwaitinfo on our own child and a set we own.
        unsafe {
            let done = libc::waitpid(child, &mut status, libc::WNOHANG);
            if done == child {
                return status;
            }
            let mut info: libc::siginfo_t = std::mem::zeroed();
            match libc::sigwaitinfo(set, &mut info) {
                libc::SIGUSR1 => kill_group_and_die(child),
                libc::SIGCHLD | -1 => {}
                forwarded => {
                    libc::kill(child, forwarded);
                }
            }
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
