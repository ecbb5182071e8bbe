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
    let mut resp = String::new();
    s.read_to_string(&mut resp).ok()?;
    Some(resp)
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
