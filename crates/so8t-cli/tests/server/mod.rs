//! A `so8t serve` child process for the CLI tests and a small HTTP/1.1 client over a
//! `TcpStream` (chunked bodies, NDJSON and SSE lines as they arrive).
#![allow(dead_code)]

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use serde_json::Value;

const BIN: &str = env!("CARGO_BIN_EXE_so8t");

// ---------------------------------------------------------------------------------------------
// The server

pub fn free_port() -> u16 {
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    l.local_addr().unwrap().port()
}

/// A running `so8t serve`, killed on drop.
pub struct Server {
    pub child: Child,
    pub port: u16,
    pub log: Arc<Mutex<String>>,
}

impl Server {
    /// Starts `so8t serve --port P ARGS` and waits for its "listening" line.
    pub fn start(args: &[&str]) -> Server {
        for _attempt in 0..3 {
            let port = free_port();
            let mut child = Command::new(BIN)
                .arg("serve")
                .arg("--port")
                .arg(port.to_string())
                .args(args)
                .stdout(Stdio::null())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap();
            let stderr = child.stderr.take().unwrap();
            let log = Arc::new(Mutex::new(String::new()));
            let (tx, rx) = mpsc::channel();
            let log2 = log.clone();
            std::thread::spawn(move || {
                let mut sent = false;
                for line in BufReader::new(stderr).lines() {
                    let Ok(line) = line else { break };
                    if !sent && line.contains("listening on http://") {
                        let _ = tx.send(true);
                        sent = true;
                    }
                    let mut l = log2.lock().unwrap();
                    l.push_str(&line);
                    l.push('\n');
                }
                let _ = tx.send(false);
            });
            let mut server = Server { child, port, log };
            match rx.recv_timeout(Duration::from_secs(60)) {
                Ok(true) => return server,
                _ => {
                    let _ = server.child.kill();
                    let _ = server.child.wait();
                    let log = server.log();
                    if log.contains("binding") {
                        continue; // the port was taken in between: try another
                    }
                    panic!("so8t serve {args:?} did not start:\n{log}");
                }
            }
        }
        panic!("so8t serve: no free port after 3 tries");
    }

    pub fn log(&self) -> String {
        self.log.lock().unwrap().clone()
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    pub fn req(&self, method: &str, path: &str, body: Option<&Value>) -> Resp {
        http(
            self.port,
            method,
            path,
            &[],
            body.map(|b| b.to_string().into_bytes()),
        )
    }

    pub fn post(&self, path: &str, body: Value) -> Resp {
        self.req("POST", path, Some(&body))
    }

    pub fn get(&self, path: &str) -> Resp {
        self.req("GET", path, None)
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

// ---------------------------------------------------------------------------------------------
// HTTP/1.1 over a TcpStream

#[derive(Debug)]
pub struct Resp {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).to_string()
    }

    pub fn json(&self) -> Value {
        serde_json::from_slice(&self.body).unwrap_or_else(|e| {
            panic!(
                "status {}: the body is not JSON ({e}): {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// Sends one request and returns the status line's code, the headers and a reader positioned at
/// the body (which is chunked when the second value says so).
pub fn send(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
    timeout: Duration,
) -> (u16, Vec<(String, String)>, BufReader<TcpStream>) {
    let mut sock = TcpStream::connect(("127.0.0.1", port)).unwrap();
    sock.set_read_timeout(Some(timeout)).unwrap();
    let mut head =
        format!("{method} {path} HTTP/1.1\r\nHost: 127.0.0.1:{port}\r\nConnection: close\r\n");
    for (k, v) in headers {
        head.push_str(&format!("{k}: {v}\r\n"));
    }
    if let Some(b) = &body {
        head.push_str(&format!(
            "Content-Type: application/json\r\nContent-Length: {}\r\n",
            b.len()
        ));
    }
    head.push_str("\r\n");
    let mut req = head.into_bytes();
    req.extend(body.unwrap_or_default());
    // The server may answer (413) and close before reading everything: ignore write errors.
    let _ = sock.write_all(&req);
    let mut r = BufReader::new(sock);
    let mut line = String::new();
    r.read_line(&mut line)
        .unwrap_or_else(|e| panic!("{method} {path}: no status line: {e}"));
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|x| x.parse().ok())
        .unwrap_or_else(|| panic!("{method} {path}: bad status line {line:?}"));
    let mut hs = Vec::new();
    loop {
        let mut l = String::new();
        r.read_line(&mut l).unwrap();
        let l = l.trim_end();
        if l.is_empty() {
            break;
        }
        if let Some((k, v)) = l.split_once(':') {
            hs.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    (status, hs, r)
}

pub fn is_chunked(hs: &[(String, String)]) -> bool {
    hs.iter().any(|(k, v)| {
        k.eq_ignore_ascii_case("transfer-encoding") && v.to_ascii_lowercase().contains("chunked")
    })
}

/// Reads the next chunk of a chunked body (None at the end).
pub fn next_chunk(r: &mut BufReader<TcpStream>) -> Option<Vec<u8>> {
    let mut l = String::new();
    if r.read_line(&mut l).ok()? == 0 {
        return None;
    }
    let n = usize::from_str_radix(l.trim().split(';').next()?.trim(), 16).ok()?;
    if n == 0 {
        return None;
    }
    let mut b = vec![0; n];
    r.read_exact(&mut b).ok()?;
    let mut crlf = [0; 2];
    r.read_exact(&mut crlf).ok()?;
    Some(b)
}

pub fn http(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: Option<Vec<u8>>,
) -> Resp {
    let (status, hs, mut r) = send(port, method, path, headers, body, Duration::from_secs(300));
    let mut out = Vec::new();
    if is_chunked(&hs) {
        while let Some(c) = next_chunk(&mut r) {
            out.extend(c);
        }
    } else {
        r.read_to_end(&mut out).unwrap();
    }
    Resp {
        status,
        headers: hs,
        body: out,
    }
}

/// NDJSON lines of a streamed body, as they arrive.
pub struct Lines {
    r: BufReader<TcpStream>,
    chunked: bool,
    buf: Vec<u8>,
    ended: bool,
}

impl Lines {
    pub fn next_line(&mut self) -> Option<Value> {
        loop {
            if let Some(i) = self.buf.iter().position(|&b| b == b'\n') {
                let line: Vec<u8> = self.buf.drain(..=i).collect();
                let t = String::from_utf8_lossy(&line).trim().to_string();
                if t.is_empty() {
                    continue;
                }
                return Some(
                    serde_json::from_str(&t).unwrap_or_else(|e| panic!("bad NDJSON {t:?}: {e}")),
                );
            }
            if self.ended {
                return None;
            }
            if self.chunked {
                match next_chunk(&mut self.r) {
                    Some(c) => self.buf.extend(c),
                    None => self.ended = true,
                }
            } else {
                let mut b = [0u8; 4096];
                match self.r.read(&mut b) {
                    Ok(0) | Err(_) => self.ended = true,
                    Ok(n) => self.buf.extend(&b[..n]),
                }
            }
        }
    }
}

pub fn stream(port: u16, path: &str, body: &Value) -> (u16, Lines) {
    let (status, hs, r) = send(
        port,
        "POST",
        path,
        &[],
        Some(body.to_string().into_bytes()),
        Duration::from_secs(300),
    );
    let chunked = is_chunked(&hs);
    (
        status,
        Lines {
            r,
            chunked,
            buf: Vec::new(),
            ended: false,
        },
    )
}
