//! The floor for the extension benchmarks: an external extension that registers for INVOKE and
//! SHUTDOWN and calls /next in a loop, doing nothing else. std only; one request per connection.
//! Built by bench/extension_overhead.py with `rustc -O`.

use std::io::{Read, Write};
use std::net::TcpStream;

fn request(api: &str, method: &str, path: &str, headers: &str, body: &str) -> Option<String> {
    let mut s = TcpStream::connect(api).ok()?;
    let req = format!(
        "{method} {path} HTTP/1.1\r\nHost: {api}\r\n{headers}Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).ok()?;
    // Read the head, then exactly Content-Length bytes: do not depend on the server closing.
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    loop {
        if let Some(end) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            let head = String::from_utf8_lossy(&buf[..end]).to_string();
            let len = head
                .lines()
                .find_map(|l| {
                    let (k, v) = l.split_once(':')?;
                    k.eq_ignore_ascii_case("content-length")
                        .then(|| v.trim().parse::<usize>().ok())?
                })
                .unwrap_or(0);
            while buf.len() < end + 4 + len {
                let n = s.read(&mut chunk).ok()?;
                if n == 0 {
                    break;
                }
                buf.extend_from_slice(&chunk[..n]);
            }
            return Some(String::from_utf8_lossy(&buf).to_string());
        }
        let n = s.read(&mut chunk).ok()?;
        if n == 0 {
            return None;
        }
        buf.extend_from_slice(&chunk[..n]);
    }
}

fn main() {
    let Ok(api) = std::env::var("AWS_LAMBDA_RUNTIME_API") else {
        std::process::exit(1)
    };
    let name = std::env::args()
        .next()
        .and_then(|a| a.rsplit('/').next().map(str::to_string))
        .unwrap_or_default();
    let Some(reg) = request(
        &api,
        "POST",
        "/2020-01-01/extension/register",
        &format!("Lambda-Extension-Name: {name}\r\n"),
        r#"{"events":["INVOKE","SHUTDOWN"]}"#,
    ) else {
        std::process::exit(1)
    };
    let id = reg
        .lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("lambda-extension-identifier")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default();
    let hdr = format!("Lambda-Extension-Identifier: {id}\r\n");
    loop {
        match request(&api, "GET", "/2020-01-01/extension/event/next", &hdr, "") {
            Some(ev) if ev.contains("\"SHUTDOWN\"") => return,
            Some(_) => {}
            None => std::process::exit(1),
        }
    }
}
