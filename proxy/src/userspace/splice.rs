//! Copying between two TCP sockets, both ways. Each direction starts with a
//! plain `recv`/`send` through a small buffer: short request/response traffic
//! stays there, and costs no pipe and no pipe splices (which, for a few
//! hundred bytes, cost more than the copy). The first read that fills the
//! buffer means bulk: from then on the direction uses `splice(2)`, socket →
//! pipe → socket inside the kernel, so the bytes never cross into userspace
//! (on loopback and veth the pages are handed over, not copied). Where a pipe
//! cannot be had (out of file descriptors), a buffered copy does the same job.
//!
//! Each direction alternates: fill its empty pipe from the source, then drain
//! it completely into the destination. Reading only into an empty pipe means
//! an `EAGAIN` from the read can only be the socket's (never a full pipe's),
//! so tokio's readiness stays exact. A direction whose source reaches EOF
//! shuts down the destination's write side (half-close) and ends; the other
//! direction carries on until it ends too.
//!
//! Pipes are reused through a small pool, emptied first, so a new connection
//! usually costs no `pipe2(2)`.

use std::{
    io,
    net::Shutdown,
    os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd},
    sync::Mutex,
};

use tokio::{io::Interest, net::TcpStream};

/// The pipe capacity asked for (`F_SETPIPE_SZ`): bulk transfers move this
/// much per pair of splices. Where the kernel refuses (a caller without
/// `CAP_SYS_ADMIN` past `pipe-user-pages-soft`), pipes keep the default 64 KiB.
const PIPE_SIZE: libc::c_int = 256 * 1024;
/// Bytes asked of one splice: the default pipe capacity, which every pipe has
/// at least (a read asks no more than an empty pipe holds).
const CHUNK: usize = 64 * 1024;
/// Pipes kept for reuse.
const POOL_MAX: usize = 512;
/// The buffered fallback's buffer per direction.
const BUFFER: usize = 64 * 1024;
/// The first reads of each direction go through a buffer this big, kept in
/// the connection's task: a read that fills it switches the direction to
/// splicing.
const SMALL: usize = 4 * 1024;

static POOL: Mutex<Vec<Pipe>> = Mutex::new(Vec::new());

/// Copies `a` ⇄ `b` until both directions have ended (EOF and shutdown each
/// way) or one fails.
pub async fn bidirectional(a: &TcpStream, b: &TcpStream) -> io::Result<()> {
    tokio::try_join!(one_way(a, b), one_way(b, a)).map(drop)
}

/// One direction: small reads are copied through a buffer; the first read
/// that fills it means bulk, and the rest goes through a pipe.
async fn one_way(src: &TcpStream, dst: &TcpStream) -> io::Result<()> {
    let mut buf = [0u8; SMALL];
    loop {
        let n = when_ready(src, Interest::READABLE, || recv(src.as_raw_fd(), &mut buf)).await?;
        if n == 0 {
            // EOF: pass the FIN on. The peer may have gone already.
            let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
            return Ok(());
        }
        let mut sent = 0;
        while sent < n {
            let chunk = buf.get(sent..n).unwrap_or_default();
            let m = when_ready(dst, Interest::WRITABLE, || send(dst.as_raw_fd(), chunk)).await?;
            if m == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            sent += m;
        }
        if n == buf.len() {
            break;
        }
    }
    match Pipe::take() {
        Ok(pipe) => {
            splice_one_way(src, dst, &pipe).await?;
            pipe.give_back();
            Ok(())
        }
        Err(_) => copy_one_way(src, dst).await,
    }
}

async fn splice_one_way(src: &TcpStream, dst: &TcpStream, pipe: &Pipe) -> io::Result<()> {
    loop {
        // Fill the (empty) pipe.
        let filled = when_ready(src, Interest::READABLE, || {
            splice(src.as_raw_fd(), pipe.write.as_raw_fd(), pipe.chunk)
        })
        .await?;
        if filled == 0 {
            // EOF: pass the FIN on. The peer may have gone already.
            let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
            return Ok(());
        }
        // Drain it completely.
        let mut left = filled;
        while left > 0 {
            let moved = when_ready(dst, Interest::WRITABLE, || {
                splice(pipe.read.as_raw_fd(), dst.as_raw_fd(), left)
            })
            .await?;
            if moved == 0 {
                return Err(io::ErrorKind::WriteZero.into());
            }
            left -= moved.min(left);
        }
    }
}

/// One non-blocking operation on `stream`'s side: first straight to the
/// kernel (the data or the room is usually there already: a request sent with
/// the handshake, an empty send buffer), which saves a trip through the
/// reactor; then, after an `EAGAIN`, through tokio's readiness, so that
/// waiting is for a real event and a stale readiness is cleared.
async fn when_ready(
    stream: &TcpStream,
    interest: Interest,
    mut op: impl FnMut() -> io::Result<usize>,
) -> io::Result<usize> {
    match op() {
        Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
        done => return done,
    }
    loop {
        stream.ready(interest).await?;
        match stream.try_io(interest, &mut op) {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            done => return done,
        }
    }
}

async fn copy_one_way(src: &TcpStream, dst: &TcpStream) -> io::Result<()> {
    let mut buf = vec![0u8; BUFFER];
    loop {
        src.readable().await?;
        let n = match src.try_read(&mut buf) {
            Ok(0) => {
                let _ = socket2::SockRef::from(dst).shutdown(Shutdown::Write);
                return Ok(());
            }
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
            Err(e) => return Err(e),
        };
        let mut sent = 0;
        while sent < n {
            dst.writable().await?;
            match dst.try_write(&buf[sent..n]) {
                Ok(0) => return Err(io::ErrorKind::WriteZero.into()),
                Ok(m) => sent += m,
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => continue,
                Err(e) => return Err(e),
            }
        }
    }
}

/// One non-blocking `recv(2)` into `buf`.
fn recv(fd: RawFd, buf: &mut [u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for writes of `buf.len()` bytes for the duration
    // of the call; `fd` is open (the caller borrows its owner).
    let n = unsafe { libc::recv(fd, buf.as_mut_ptr().cast(), buf.len(), libc::MSG_DONTWAIT) };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.unsigned_abs())
    }
}

/// One non-blocking `send(2)` of `buf` (no `SIGPIPE` if the peer is gone).
fn send(fd: RawFd, buf: &[u8]) -> io::Result<usize> {
    // SAFETY: `buf` is valid for reads of `buf.len()` bytes for the duration
    // of the call; `fd` is open (the caller borrows its owner).
    let n = unsafe {
        libc::send(
            fd,
            buf.as_ptr().cast(),
            buf.len(),
            libc::MSG_DONTWAIT | libc::MSG_NOSIGNAL,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.unsigned_abs())
    }
}

/// One non-blocking `splice(2)` of up to `len` bytes.
fn splice(from: RawFd, to: RawFd, len: usize) -> io::Result<usize> {
    // SAFETY: both descriptors are open for the duration of the call (the
    // caller borrows their owners); null offsets mean "the file position",
    // which pipes and sockets require; no memory of ours is passed.
    let n = unsafe {
        libc::splice(
            from,
            std::ptr::null_mut(),
            to,
            std::ptr::null_mut(),
            len,
            libc::SPLICE_F_MOVE | libc::SPLICE_F_NONBLOCK,
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n.unsigned_abs())
    }
}

/// A non-blocking pipe. Only empty pipes go back to the pool.
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Its capacity: what one fill asks for.
    chunk: usize,
}

impl Pipe {
    fn take() -> io::Result<Pipe> {
        if let Some(pipe) = POOL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
            .pop()
        {
            return Ok(pipe);
        }
        let mut fds = [0 as libc::c_int; 2];
        // SAFETY: `fds` is a valid array of two ints for the kernel to fill.
        let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_NONBLOCK | libc::O_CLOEXEC) };
        if rc != 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: pipe2 succeeded, so both are new descriptors that nothing
        // else owns; each is wrapped exactly once.
        let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
        // SAFETY: F_SETPIPE_SZ on a pipe we own; failure leaves it as it was.
        let size = unsafe { libc::fcntl(write.as_raw_fd(), libc::F_SETPIPE_SZ, PIPE_SIZE) };
        let chunk = if size > 0 {
            size.unsigned_abs() as usize
        } else {
            CHUNK
        };
        Ok(Pipe { read, write, chunk })
    }

    /// Returns an empty pipe to the pool (a full pool closes it).
    fn give_back(self) {
        let mut pool = POOL
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if pool.len() < POOL_MAX {
            pool.push(self);
        }
    }
}

#[cfg(test)]
mod tests {
    #![expect(clippy::unwrap_used, reason = "tests: a panic is the failure report")]

    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

    use super::*;

    /// client ⇄ [a ⇄ b] ⇄ server, with `bidirectional` joining a and b.
    async fn pair() -> (
        TcpStream,
        TcpStream,
        tokio::task::JoinHandle<io::Result<()>>,
    ) {
        let front = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let back = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let client = TcpStream::connect(front.local_addr().unwrap())
            .await
            .unwrap();
        let (a, _) = front.accept().await.unwrap();
        let b = TcpStream::connect(back.local_addr().unwrap())
            .await
            .unwrap();
        let (server, _) = back.accept().await.unwrap();
        let task = tokio::spawn(async move { bidirectional(&a, &b).await });
        (client, server, task)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn bytes_flow_both_ways_and_half_close_passes_through() {
        let (mut client, mut server, task) = pair().await;
        // 4 MiB one way: many pipe fills, and backpressure on the way.
        let payload: Vec<u8> = (0..4 << 20).map(|i: u32| (i % 251) as u8).collect();
        let expected = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&payload).await.unwrap();
            // Half-close: the server sees EOF, and can still answer.
            client.shutdown().await.unwrap();
            let mut answer = String::new();
            client.read_to_string(&mut answer).await.unwrap();
            answer
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert!(
            got == expected,
            "the payload arrived altered ({} bytes)",
            got.len()
        );
        server.write_all(b"done").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), "done");
        task.await.unwrap().unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn pipes_go_back_to_the_pool_empty() {
        let (mut client, mut server, task) = pair().await;
        // More than the small buffer: the direction switches to a pipe.
        let payload = vec![7u8; 4 * SMALL];
        client.write_all(&payload).await.unwrap();
        client.shutdown().await.unwrap();
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        server.shutdown().await.unwrap();
        task.await.unwrap().unwrap();
        assert_eq!(got, payload);
        let pipe = Pipe::take().unwrap();
        let mut byte = [0u8; 1];
        // SAFETY: reading one byte into a local buffer from an open descriptor.
        let n = unsafe { libc::read(pipe.read.as_raw_fd(), byte.as_mut_ptr().cast(), 1) };
        assert_eq!(n, -1, "a pooled pipe held data");
    }
}
