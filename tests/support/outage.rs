//! A TCP forwarder that can go down: while down it refuses connections (nothing listens on its
//! port) and has reset every connection it carried, as a service that crashed; up again, it
//! listens on the same port. For tests of a peer's outage without killing the peer.

use std::io::{Read, Write};
use std::net::{Shutdown, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

pub struct Outage {
    pub port: u16,
    upstream: u16,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
    listener: Option<std::thread::JoinHandle<()>>,
}

impl Outage {
    /// Forwards a free port to `upstream` on loopback; up.
    pub fn start(upstream: u16) -> Outage {
        let mut outage = Outage {
            port: super::free_port(),
            upstream,
            up: Arc::new(AtomicBool::new(false)),
            open: Arc::new(Mutex::new(Vec::new())),
            listener: None,
        };
        outage.up();
        outage
    }

    pub fn up(&mut self) {
        let listener = loop {
            // The port was ours a moment ago; a connection in TIME_WAIT does not hold it.
            match TcpListener::bind(("127.0.0.1", self.port)) {
                Ok(l) => break l,
                Err(_) => std::thread::sleep(Duration::from_millis(50)),
            }
        };
        listener.set_nonblocking(true).unwrap();
        self.up.store(true, Ordering::SeqCst);
        let (up, open, upstream) = (self.up.clone(), self.open.clone(), self.upstream);
        self.listener = Some(std::thread::spawn(move || {
            while up.load(Ordering::SeqCst) {
                match listener.accept() {
                    Ok((client, _)) => forward(client, upstream, &open),
                    Err(_) => std::thread::sleep(Duration::from_millis(10)),
                }
            }
        }));
    }

    /// Stops listening and resets every connection carried so far.
    pub fn down(&mut self) {
        self.up.store(false, Ordering::SeqCst);
        if let Some(listener) = self.listener.take() {
            listener.join().unwrap();
        }
        for stream in self.open.lock().unwrap().drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }
}

impl Drop for Outage {
    fn drop(&mut self) {
        self.down();
    }
}

fn forward(client: TcpStream, upstream: u16, open: &Mutex<Vec<TcpStream>>) {
    client.set_nonblocking(false).unwrap();
    let Ok(server) = TcpStream::connect(("127.0.0.1", upstream)) else {
        return;
    };
    let mut open = open.lock().unwrap();
    open.push(client.try_clone().unwrap());
    open.push(server.try_clone().unwrap());
    pipe(client.try_clone().unwrap(), server.try_clone().unwrap());
    pipe(server, client);
}

/// Copies `from` to `to` on a thread until either side closes.
fn pipe(mut from: TcpStream, mut to: TcpStream) {
    std::thread::spawn(move || {
        let mut buf = [0u8; 16 * 1024];
        loop {
            match from.read(&mut buf) {
                Ok(0) | Err(_) => break,
                Ok(n) => {
                    if to.write_all(&buf[..n]).is_err() {
                        break;
                    }
                }
            }
        }
        let _ = to.shutdown(Shutdown::Write);
    });
}
