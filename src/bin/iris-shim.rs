//! `iris-shim --parent-pid P -- ARGV...`: the task shim as a small binary of its own, so starting a
//! task does not pay for loading the whole worker. `iris-worker shim` does the same.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    match args.as_slice() {
        [_, flag, pid, dashes, argv @ ..] if flag == "--parent-pid" && dashes == "--" => {
            match pid.parse() {
                Ok(pid) => iris_worker::shell::runtime::shim::run(pid, argv),
                Err(_) => eprintln!("iris-shim: --parent-pid {pid:?} is not a pid"),
            }
        }
        _ => eprintln!("usage: iris-shim --parent-pid PID -- ARGV..."),
    }
    std::process::exit(127);
}
