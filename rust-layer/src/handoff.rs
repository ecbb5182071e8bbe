//! Hand-off of records to the extension (one UDP datagram on loopback) or, when no extension
//! listens, one EMF line on stdout.

use std::io::{ErrorKind, Write};
use std::net::{Ipv4Addr, UdpSocket};

use crate::config::Config;
use crate::record::{emf_line, encode, Hello, InvocationRecord};

/// Where the fallback EMF lines go (stdout, which Lambda ships to CloudWatch Logs).
pub type EmfWriter = Box<dyn Write + Send>;

/// What became of the records so far.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct HandoffStats {
    /// Datagrams sent (the `hello` included).
    pub sent: u64,
    /// Records lost: a send failed for another reason than an absent extension, or stdout failed.
    pub dropped: u64,
    /// Records printed as EMF lines.
    pub emf_lines: u64,
    /// The extension was found absent; every record is printed from then on.
    pub extension_absent: bool,
}

/// Process-wide channel to the extension.
pub struct Sender {
    sock: Option<UdpSocket>,
    hello_sent: bool,
    out: EmfWriter,
    stats: HandoffStats,
}

impl std::fmt::Debug for Sender {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Sender")
            .field("sock", &self.sock)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

fn connect(port: u16) -> std::io::Result<UdpSocket> {
    let s = UdpSocket::bind((Ipv4Addr::LOCALHOST, 0))?;
    // Connected: a refused port surfaces as ECONNREFUSED on a later send, which is how the
    // absence of the extension shows. Non-blocking: a full buffer loses a record, never blocks.
    s.connect((Ipv4Addr::LOCALHOST, port))?;
    s.set_nonblocking(true)?;
    Ok(s)
}

impl Sender {
    /// A sender to `127.0.0.1:port`, printing fallback lines to `out`.
    pub fn new(port: u16, out: EmfWriter) -> Self {
        let sock = match connect(port) {
            Ok(s) => Some(s),
            Err(e) => {
                tracing::warn!(error = %e, port, "lambda_memory_profile: no intake socket; printing EMF lines");
                None
            }
        };
        let stats = HandoffStats {
            extension_absent: sock.is_none(),
            ..HandoffStats::default()
        };
        Self {
            sock,
            hello_sent: false,
            out,
            stats,
        }
    }

    /// Counters of this sender.
    pub fn stats(&self) -> HandoffStats {
        self.stats
    }

    /// True when sent; false when not (and the extension is marked absent on ECONNREFUSED).
    fn send_bytes(&mut self, data: &[u8]) -> bool {
        let Some(sock) = self.sock.as_ref() else {
            return false;
        };
        match sock.send(data) {
            Ok(_) => {
                self.stats.sent += 1;
                true
            }
            Err(e) if e.kind() == ErrorKind::ConnectionRefused => {
                self.stats.extension_absent = true;
                false
            }
            Err(_) => {
                // Full buffer (EAGAIN) and the like: lose one record, never block the handler.
                self.stats.dropped += 1;
                false
            }
        }
    }

    /// Sends one invocation record (after the `hello` at the first one); prints it as EMF when
    /// the extension is absent, this very send included, so the record is not lost.
    pub fn send(&mut self, record: &InvocationRecord, config: &Config) {
        if !self.stats.extension_absent {
            if !self.hello_sent {
                self.hello_sent = true;
                self.send_bytes(&encode(&Hello::new()));
            }
            if self.send_bytes(&encode(record)) || !self.stats.extension_absent {
                return;
            }
        }
        self.print_emf(record, config);
    }

    fn print_emf(&mut self, record: &InvocationRecord, config: &Config) {
        let name = std::env::var("AWS_LAMBDA_FUNCTION_NAME").unwrap_or_default();
        let name = if name.is_empty() {
            "local".into()
        } else {
            name
        };
        let version = std::env::var("AWS_LAMBDA_FUNCTION_VERSION").unwrap_or_default();
        let version = if version.is_empty() {
            "$LATEST".into()
        } else {
            version
        };
        let mut line = emf_line(record, config, &name, &version);
        line.push('\n');
        // One write per line: lines of concurrent writers do not interleave.
        if self
            .out
            .write_all(line.as_bytes())
            .and_then(|_| self.out.flush())
            .is_ok()
        {
            self.stats.emf_lines += 1;
        } else {
            self.stats.dropped += 1;
        }
    }
}
