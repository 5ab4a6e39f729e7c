//! A TCP fault proxy for chaos runs and tests, loopback only: sits between
//! the runner and the control plane (or between the runner and an sshd) and
//! adds latency, limits bandwidth, resets connections in the middle of a
//! stream, black-holes traffic, or cuts and restores all of it at a given
//! moment.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::time::Instant;

/// The faults in force; changed at run time through [`FaultProxy::set`].
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Faults {
    /// Added to every chunk in both directions.
    pub latency: Duration,
    /// Bytes per second in each direction of each connection; `None` = no limit.
    pub bandwidth: Option<u64>,
    /// Accept connections, then never forward a byte in either direction.
    pub black_hole: bool,
    /// Reset every connection (and refuse new ones, by reset) until restored.
    pub cut: bool,
    /// Reset a connection once it has carried this many bytes (both
    /// directions together); `None` = never.
    pub reset_after_bytes: Option<u64>,
}

/// What the proxy has seen.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ProxyStats {
    pub connections: u64,
    pub bytes_forwarded: u64,
    pub resets: u64,
}

#[derive(Default)]
struct Counters {
    connections: AtomicU64,
    bytes: AtomicU64,
    resets: AtomicU64,
}

/// A running proxy; stops when dropped.
pub struct FaultProxy {
    addr: SocketAddr,
    faults: watch::Sender<Faults>,
    counters: Arc<Counters>,
    stop: Mutex<Option<tokio::sync::oneshot::Sender<()>>>,
    thread: Option<JoinHandle<()>>,
}

impl FaultProxy {
    /// Starts a proxy on a free port of the loopback address of `upstream`'s
    /// family, forwarding to `upstream`, which must itself be a loopback
    /// address.
    pub fn start(upstream: SocketAddr) -> io::Result<FaultProxy> {
        if !upstream.ip().is_loopback() {
            return Err(io::Error::new(
                io::ErrorKind::InvalidInput,
                format!("fault proxy upstream {upstream} is not a loopback address"),
            ));
        }
        let listen_ip: IpAddr = if upstream.is_ipv4() {
            [127, 0, 0, 1].into()
        } else {
            std::net::Ipv6Addr::LOCALHOST.into()
        };
        let std_listener = std::net::TcpListener::bind((listen_ip, 0))?;
        std_listener.set_nonblocking(true)?;
        let addr = std_listener.local_addr()?;
        let (faults, faults_rx) = watch::channel(Faults::default());
        let counters = Arc::new(Counters::default());
        let (stop_tx, stop_rx) = tokio::sync::oneshot::channel();
        let thread_counters = counters.clone();
        let thread = std::thread::Builder::new()
            .name(format!("fault-proxy-{}", addr.port()))
            .spawn(move || {
                let rt = tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                    .expect("tokio runtime for the fault proxy");
                rt.block_on(async move {
                    let listener = TcpListener::from_std(std_listener).expect("listener");
                    tokio::select! {
                        _ = accept_loop(listener, upstream, faults_rx, thread_counters) => {}
                        _ = stop_rx => {}
                    }
                });
            })?;
        Ok(FaultProxy {
            addr,
            faults,
            counters,
            stop: Mutex::new(Some(stop_tx)),
            thread: Some(thread),
        })
    }

    /// The address clients connect to.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// Replaces the faults in force; connections pick them up at once.
    pub fn set(&self, faults: Faults) {
        self.faults.send_replace(faults);
    }

    /// Changes the faults in force with `f`.
    pub fn update(&self, f: impl FnOnce(&mut Faults)) {
        self.faults.send_modify(f);
    }

    /// Cuts all traffic: every open connection is reset, new ones too.
    pub fn cut(&self) {
        self.update(|f| f.cut = true);
    }

    /// Removes every fault.
    pub fn restore(&self) {
        self.set(Faults::default());
    }

    pub fn stats(&self) -> ProxyStats {
        ProxyStats {
            connections: self.counters.connections.load(Ordering::Relaxed),
            bytes_forwarded: self.counters.bytes.load(Ordering::Relaxed),
            resets: self.counters.resets.load(Ordering::Relaxed),
        }
    }
}

impl Drop for FaultProxy {
    fn drop(&mut self) {
        if let Some(tx) = self.stop.lock().unwrap_or_else(|e| e.into_inner()).take() {
            let _ = tx.send(());
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

async fn accept_loop(
    listener: TcpListener,
    upstream: SocketAddr,
    faults: watch::Receiver<Faults>,
    counters: Arc<Counters>,
) {
    // Connections are tasks of this runtime: they end with it when the proxy stops.
    loop {
        let Ok((client, _)) = listener.accept().await else {
            continue;
        };
        counters.connections.fetch_add(1, Ordering::Relaxed);
        let faults = faults.clone();
        let counters = counters.clone();
        tokio::spawn(async move {
            if faults.borrow().cut {
                reset(client, &counters);
                return;
            }
            let Ok(server) = TcpStream::connect(upstream).await else {
                reset(client, &counters);
                return;
            };
            connection(client, server, faults, counters).await;
        });
    }
}

/// Closes with RST rather than FIN, as a failing network would.
fn reset(stream: TcpStream, counters: &Counters) {
    counters.resets.fetch_add(1, Ordering::Relaxed);
    let _ = stream.set_zero_linger();
    drop(stream);
}

async fn connection(
    client: TcpStream,
    server: TcpStream,
    mut faults: watch::Receiver<Faults>,
    counters: Arc<Counters>,
) {
    let _ = client.set_nodelay(true);
    let _ = server.set_nodelay(true);
    let carried = Arc::new(AtomicU64::new(0));
    let (cr, cw) = client.into_split();
    let (sr, sw) = server.into_split();
    let up = pump(cr, sw, faults.clone(), counters.clone(), carried.clone());
    let down = pump(sr, cw, faults.clone(), counters.clone(), carried);
    tokio::pin!(up, down);
    let (mut up_done, mut down_done) = (false, false);
    let outcome = loop {
        tokio::select! {
            r = &mut up, if !up_done => { if r == Pump::Reset { break Pump::Reset } up_done = true; }
            r = &mut down, if !down_done => { if r == Pump::Reset { break Pump::Reset } down_done = true; }
            changed = faults.changed() => {
                if changed.is_err() || faults.borrow().cut { break Pump::Reset }
            }
        }
        if up_done && down_done {
            break Pump::Closed;
        }
    };
    if outcome == Pump::Reset {
        // The pump that saw the fault set linger 0 on its halves; the other
        // pump's halves are dropped with this future.
        counters.resets.fetch_add(1, Ordering::Relaxed);
    }
}

#[derive(Debug, PartialEq, Eq)]
enum Pump {
    Closed,
    Reset,
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut faults: watch::Receiver<Faults>,
    counters: Arc<Counters>,
    carried: Arc<AtomicU64>,
) -> Pump {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) => {
                let _ = to.shutdown().await;
                return Pump::Closed;
            }
            Ok(n) => n,
            Err(_) => return reset_halves(from, to),
        };
        let received = Instant::now();
        // Black hole: hold the bytes until the fault is lifted (or a cut).
        while faults.borrow().black_hole {
            if faults.changed().await.is_err() {
                return Pump::Reset;
            }
        }
        let f = faults.borrow().clone();
        if f.cut {
            return reset_halves(from, to);
        }
        if !f.latency.is_zero() {
            tokio::time::sleep_until(received + f.latency).await;
        }
        let total = carried.fetch_add(n as u64, Ordering::Relaxed) + n as u64;
        if f.reset_after_bytes.is_some_and(|limit| total > limit) {
            return reset_halves(from, to);
        }
        // Counted before the write: once written, the peer may act on the
        // bytes (and read the stats) before this task runs again.
        counters.bytes.fetch_add(n as u64, Ordering::Relaxed);
        if to.write_all(&buf[..n]).await.is_err() {
            return reset_halves(from, to);
        }
        if let Some(bw) = f.bandwidth.filter(|b| *b > 0) {
            tokio::time::sleep(Duration::from_secs_f64(n as f64 / bw as f64)).await;
        }
    }
}

fn reset_halves(from: tokio::net::tcp::OwnedReadHalf, to: tokio::net::tcp::OwnedWriteHalf) -> Pump {
    // Each half belongs to a different connection: reset both.
    let _ = from.as_ref().set_zero_linger();
    let _ = to.as_ref().set_zero_linger();
    Pump::Reset
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::net::TcpStream as StdStream;
    use std::time::Instant as StdInstant;

    /// An echo server on loopback, one thread per connection.
    fn echo_server() -> SocketAddr {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = l.local_addr().unwrap();
        std::thread::spawn(move || {
            for s in l.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut s = s;
                    let mut buf = [0u8; 8192];
                    while let Ok(n) = s.read(&mut buf) {
                        if n == 0 || s.write_all(&buf[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        addr
    }

    fn client(proxy: &FaultProxy) -> StdStream {
        let s = StdStream::connect(proxy.addr()).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        s
    }

    fn roundtrip(s: &mut StdStream, msg: &[u8]) -> io::Result<Vec<u8>> {
        s.write_all(msg)?;
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got)?;
        Ok(got)
    }

    #[test]
    fn forwards_and_adds_latency() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let mut s = client(&proxy);
        assert_eq!(roundtrip(&mut s, b"hello").unwrap(), b"hello");
        proxy.update(|f| f.latency = Duration::from_millis(150));
        let t = StdInstant::now();
        assert_eq!(roundtrip(&mut s, b"again").unwrap(), b"again");
        // Latency applies in both directions.
        assert!(
            t.elapsed() >= Duration::from_millis(300),
            "{:?}",
            t.elapsed()
        );
        assert!(proxy.stats().bytes_forwarded >= 20);
    }

    #[test]
    fn cut_resets_open_and_new_connections_until_restored() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        let mut s = client(&proxy);
        roundtrip(&mut s, b"x").unwrap();
        proxy.cut();
        // The open connection dies (reset or EOF, never an answer).
        assert!(roundtrip(&mut s, b"y").is_err());
        let mut s2 = client(&proxy);
        assert!(roundtrip(&mut s2, b"z").is_err());
        proxy.restore();
        let mut s3 = client(&proxy);
        assert_eq!(roundtrip(&mut s3, b"back").unwrap(), b"back");
        assert!(proxy.stats().resets >= 2);
    }

    #[test]
    fn black_hole_holds_traffic_until_lifted() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        proxy.update(|f| f.black_hole = true);
        let mut s = client(&proxy);
        s.set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        let err = roundtrip(&mut s, b"lost?").unwrap_err();
        assert!(matches!(
            err.kind(),
            io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
        ));
        proxy.restore();
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut got = [0u8; 5];
        s.read_exact(&mut got).unwrap();
        assert_eq!(&got, b"lost?");
    }

    #[test]
    fn resets_in_the_middle_of_a_stream() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        proxy.update(|f| f.reset_after_bytes = Some(1000));
        let mut s = client(&proxy);
        let chunk = [7u8; 400];
        let mut failed = false;
        for _ in 0..10 {
            if roundtrip(&mut s, &chunk).is_err() {
                failed = true;
                break;
            }
        }
        assert!(
            failed,
            "the stream should have been reset after ~1000 bytes"
        );
    }

    #[test]
    fn limits_bandwidth() {
        let proxy = FaultProxy::start(echo_server()).unwrap();
        proxy.update(|f| f.bandwidth = Some(100_000));
        let mut s = client(&proxy);
        let data = vec![1u8; 64 * 1024];
        let t = StdInstant::now();
        s.write_all(&data).unwrap();
        let mut got = vec![0u8; data.len()];
        s.read_exact(&mut got).unwrap();
        // 64 KiB at 100 kB/s each way: well over half a second.
        assert!(
            t.elapsed() >= Duration::from_millis(500),
            "{:?}",
            t.elapsed()
        );
    }

    #[test]
    fn refuses_a_non_loopback_upstream() {
        let err = FaultProxy::start("192.0.2.1:80".parse().unwrap())
            .err()
            .unwrap();
        assert!(err.to_string().contains("not a loopback address"));
    }
}
