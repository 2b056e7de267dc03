//! The CLI's side of the query socket: one HTTP/1.0 request per connection,
//! blocking (the CLI has nothing else to do meanwhile).

use std::{
    io::{Read, Write},
    os::unix::net::UnixStream,
    path::Path,
    time::Duration,
};

use super::QueryError;

/// How long the daemon may take to answer.
const TIMEOUT: Duration = Duration::from_secs(30);

/// Sends `method path` with `body` (JSON, or none) and returns the body of a
/// 200 answer; another status is an error carrying the daemon's message.
pub fn request(
    socket: &Path,
    method: &str,
    path: &str,
    body: Option<&[u8]>,
) -> Result<String, QueryError> {
    let mut stream = UnixStream::connect(socket).map_err(|source| QueryError::Connect {
        path: socket.to_path_buf(),
        source,
    })?;
    let io = |e| QueryError::io(socket, e);
    stream.set_read_timeout(Some(TIMEOUT)).map_err(io)?;
    stream.set_write_timeout(Some(TIMEOUT)).map_err(io)?;
    let body = body.unwrap_or_default();
    let head = format!(
        "{method} {path} HTTP/1.0\r\nHost: localhost\r\nContent-Type: application/json\r\n\
         Content-Length: {}\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes()).map_err(io)?;
    stream.write_all(body).map_err(io)?;
    let mut answer = Vec::new();
    stream.read_to_end(&mut answer).map_err(io)?;
    let answer = String::from_utf8_lossy(&answer);
    let malformed = || QueryError::Malformed {
        path: socket.to_path_buf(),
    };
    let (head, body) = answer.split_once("\r\n\r\n").ok_or_else(malformed)?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(malformed)?;
    if status != 200 {
        return Err(QueryError::Status {
            path: socket.to_path_buf(),
            status,
            body: body.trim().to_owned(),
        });
    }
    Ok(body.to_owned())
}
