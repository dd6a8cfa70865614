//! `sluice health`: asks a running host's admin listener whether it is alive (`/healthz`) or
//! ready (`/readyz`). Container health checks run it, since minimal images have no curl.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::Duration;

/// The address to connect to for a listener bound to `address`: an unspecified address
/// (`0.0.0.0`, `[::]`) is reached through loopback.
fn reachable(address: SocketAddr) -> SocketAddr {
    match address {
        SocketAddr::V4(v4) if v4.ip().is_unspecified() => SocketAddr::from(([127, 0, 0, 1], v4.port())),
        SocketAddr::V6(v6) if v6.ip().is_unspecified() => {
            SocketAddr::from(([0u16, 0, 0, 0, 0, 0, 0, 1], v6.port()))
        }
        other => other,
    }
}

/// Connects to the admin listener at `address` within `timeout` and sends `GET path` with
/// `headers` (each line ending in CRLF). HTTP/1.0: the answer comes unframed, never chunked,
/// and the connection closes after it. Returns the address reached and the stream to read.
pub fn ask(
    address: SocketAddr,
    path: &str,
    headers: &str,
    timeout: Duration,
) -> Result<(SocketAddr, TcpStream), String> {
    let target = reachable(address);
    let mut stream = TcpStream::connect_timeout(&target, timeout)
        .map_err(|e| format!("cannot connect to {target}: {e}"))?;
    stream.set_write_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    write!(stream, "GET {path} HTTP/1.0\r\nHost: {target}\r\n{headers}\r\n")
        .map_err(|e| format!("cannot ask {target}: {e}"))?;
    Ok((target, stream))
}

/// GETs `path` from the admin listener at `address`; Ok with the status line when it answers
/// 200 within `timeout`.
pub fn probe(address: SocketAddr, path: &str, timeout: Duration) -> Result<String, String> {
    get(address, path, timeout).map(|(status, _)| status)
}

/// GETs `path` from the admin listener at `address`: the status line and the body when it
/// answers 200 within `timeout`.
pub fn get(address: SocketAddr, path: &str, timeout: Duration) -> Result<(String, String), String> {
    let (target, mut stream) = ask(address, path, "", timeout)?;
    stream.set_read_timeout(Some(timeout)).map_err(|e| e.to_string())?;
    let mut answer = String::new();
    stream.read_to_string(&mut answer).map_err(|e| format!("no answer from {target}: {e}"))?;
    let status = answer.lines().next().unwrap_or_default().to_string();
    let body = answer.split_once("\r\n\r\n").map(|(_, body)| body.to_string()).unwrap_or_default();
    if status.split_whitespace().nth(1) == Some("200") {
        Ok((status, body))
    } else if status.is_empty() {
        Err(format!("{target} closed the connection without answering"))
    } else {
        Err(format!("{target}{path} answered `{status}`"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unspecified_addresses_are_reached_through_loopback() {
        assert_eq!(reachable("0.0.0.0:8888".parse().expect("addr")), "127.0.0.1:8888".parse().expect("addr"));
        assert_eq!(reachable("[::]:8888".parse().expect("addr")), "[::1]:8888".parse().expect("addr"));
        assert_eq!(reachable("10.0.0.5:8888".parse().expect("addr")), "10.0.0.5:8888".parse().expect("addr"));
    }

    #[test]
    fn a_closed_port_is_an_error_not_a_hang() {
        let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind");
        let address = listener.local_addr().expect("addr");
        drop(listener);
        let error = probe(address, "/healthz", Duration::from_secs(1)).expect_err("nothing listens");
        assert!(error.contains("cannot connect"), "{error}");
    }
}
