//! A minimal HTTP/1.1 client for one job: POSTing a report (the monthly
//! STR) to an endpoint and checking it was accepted.
//!
//! Plain `http://` only: the intelligence unit's endpoint is reached through
//! the bank's TLS-terminating gateway until mutual TLS lands. One request
//! per connection (`Connection: close`), blocking, with a deadline on
//! connect, write and read. The answer's status line decides; anything but
//! 2xx is an error carrying the status and the start of the body.

use std::io::{Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::Duration;

/// Most bytes of an answer read (status, headers and the start of a body).
const ANSWER_MAX: usize = 64 << 10;

/// Where to POST: host, port and path of an `http://` URL.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Endpoint {
    pub host: String,
    pub port: u16,
    pub path: String,
}

impl Endpoint {
    /// Parses `http://host[:port][/path]`.
    pub fn parse(url: &str) -> Result<Self, String> {
        let Some(rest) = url.strip_prefix("http://") else {
            return Err(format!(
                "{url:?}: only http:// endpoints are supported (reach https ones through the bank's TLS gateway)"
            ));
        };
        let (authority, path) = match rest.find('/') {
            Some(at) => (&rest[..at], &rest[at..]),
            None => (rest, "/"),
        };
        let (host, port) = match authority.rsplit_once(':') {
            Some((h, p)) => (h, p.parse().map_err(|_| format!("{url:?}: bad port {p:?}"))?),
            None => (authority, 80),
        };
        if host.is_empty() || path.contains(char::is_whitespace) {
            return Err(format!("{url:?} is not an http://host[:port]/path URL"));
        }
        Ok(Self { host: host.to_string(), port, path: path.to_string() })
    }

    /// POSTs `len` bytes read from `body` (a report need not be in memory);
    /// returns the status line of a 2xx answer.
    pub fn post(&self, content_type: &str, len: u64, body: &mut dyn Read, timeout: Duration) -> Result<String, String> {
        let fail = |e: std::io::Error| format!("{}:{}: {e}", self.host, self.port);
        let addr = (self.host.as_str(), self.port)
            .to_socket_addrs()
            .map_err(fail)?
            .next()
            .ok_or_else(|| format!("{}: no address", self.host))?;
        let mut stream = TcpStream::connect_timeout(&addr, timeout).map_err(fail)?;
        stream.set_read_timeout(Some(timeout)).map_err(fail)?;
        stream.set_write_timeout(Some(timeout)).map_err(fail)?;
        let head = format!(
            "POST {} HTTP/1.1\r\nHost: {}:{}\r\nContent-Type: {content_type}; charset=utf-8\r\nContent-Length: {}\r\n\
             User-Agent: harbour/{}\r\nConnection: close\r\n\r\n",
            self.path,
            self.host,
            self.port,
            len,
            env!("CARGO_PKG_VERSION")
        );
        stream.write_all(head.as_bytes()).map_err(fail)?;
        let sent = std::io::copy(&mut body.take(len), &mut stream).map_err(fail)?;
        if sent != len {
            return Err(format!("the report ended after {sent} of {len} bytes"));
        }
        stream.flush().map_err(fail)?;
        let mut answer = Vec::new();
        let mut chunk = [0u8; 4096];
        while answer.len() < ANSWER_MAX {
            match stream.read(&mut chunk) {
                Ok(0) => break,
                Ok(n) => answer.extend_from_slice(&chunk[..n]),
                Err(e) if answer.is_empty() => return Err(fail(e)),
                Err(_) => break,
            }
            if answer.windows(4).any(|w| w == b"\r\n\r\n") {
                break;
            }
        }
        let text = String::from_utf8_lossy(&answer);
        let status = text.lines().next().unwrap_or_default().to_string();
        let code = status.split_whitespace().nth(1).and_then(|c| c.parse::<u16>().ok());
        match code {
            Some(200..=299) => Ok(status),
            _ => Err(format!("endpoint answered {status:?}")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_parse() {
        let e = Endpoint::parse("http://127.0.0.1:8080/str/submit").unwrap();
        assert_eq!((e.host.as_str(), e.port, e.path.as_str()), ("127.0.0.1", 8080, "/str/submit"));
        assert_eq!(Endpoint::parse("http://jfiu.example").unwrap().port, 80);
        assert_eq!(Endpoint::parse("http://jfiu.example").unwrap().path, "/");
        for bad in ["https://jfiu.example/", "ftp://x", "http://:80/", "http://host:port/", "http://h/a b"] {
            assert!(Endpoint::parse(bad).is_err(), "{bad}");
        }
    }
}
