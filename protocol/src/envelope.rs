//! The envelope every record shares: one JSON object of at most [`MAX_DATAGRAM`] bytes with an
//! accepted `v` and a known `kind`. What the body holds is read by whoever uses the record.

use std::fmt;

use crate::{MAX_DATAGRAM, PROTOCOL_VERSIONS};

/// The kinds of record.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    /// `hello`: the sender exists, before its first `invocation`.
    Hello,
    /// `invocation`: the figures of one invocation.
    Invocation,
}

impl Kind {
    /// The protocol's spelling (the `kind` field).
    pub const fn as_str(self) -> &'static str {
        match self {
            Kind::Hello => "hello",
            Kind::Invocation => "invocation",
        }
    }

    /// The kind spelled `name`, if there is one.
    pub fn from_name(name: &str) -> Option<Kind> {
        [Kind::Hello, Kind::Invocation]
            .into_iter()
            .find(|k| k.as_str() == name)
    }
}

/// A datagram whose envelope is valid.
#[derive(Debug, Clone, PartialEq)]
pub struct Envelope {
    /// The record's `v`, one of [`PROTOCOL_VERSIONS`].
    pub version: u64,
    /// The record's `kind`.
    pub kind: Kind,
    /// The whole JSON object, `v` and `kind` included, handed over rather than copied.
    pub body: serde_json::Value,
}

/// Why a datagram's envelope is not valid.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EnvelopeError {
    /// Larger than [`MAX_DATAGRAM`] bytes (the size is carried).
    Oversized(usize),
    /// Not JSON at all; the position only, so that a flood of these costs little.
    NotJson {
        /// Line of the first error.
        line: usize,
        /// Column of the first error.
        column: usize,
    },
    /// JSON, but not an object.
    NotAnObject,
    /// No `v` field.
    MissingVersion,
    /// No `kind` field, or one that is not a string.
    MissingKind,
    /// A `v` that is not an accepted version (as the datagram wrote it).
    UnknownVersion(String),
    /// A `kind` that is not a known one.
    UnknownKind(String),
}

impl fmt::Display for EnvelopeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            EnvelopeError::Oversized(n) => {
                write!(
                    f,
                    "datagram of {n} bytes exceeds the {MAX_DATAGRAM}-byte limit"
                )
            }
            EnvelopeError::NotJson { line, column } => {
                write!(f, "not JSON (line {line}, column {column})")
            }
            EnvelopeError::NotAnObject => f.write_str("not a JSON object"),
            EnvelopeError::MissingVersion => f.write_str("missing `v`"),
            EnvelopeError::MissingKind => f.write_str("missing `kind`"),
            EnvelopeError::UnknownVersion(v) => write!(f, "unsupported protocol version {v}"),
            EnvelopeError::UnknownKind(k) => write!(f, "unknown record kind {k:?}"),
        }
    }
}

impl std::error::Error for EnvelopeError {}

/// Checks one datagram's envelope: size first (before any parsing), then JSON, then `v`, then
/// `kind`.
pub fn parse_envelope(bytes: &[u8]) -> Result<Envelope, EnvelopeError> {
    if bytes.len() > MAX_DATAGRAM {
        return Err(EnvelopeError::Oversized(bytes.len()));
    }
    let body: serde_json::Value =
        serde_json::from_slice(bytes).map_err(|e| EnvelopeError::NotJson {
            line: e.line(),
            column: e.column(),
        })?;
    let obj = body.as_object().ok_or(EnvelopeError::NotAnObject)?;
    let version = match obj.get("v") {
        Some(v) => v
            .as_u64()
            .filter(|v| PROTOCOL_VERSIONS.contains(v))
            .ok_or_else(|| EnvelopeError::UnknownVersion(v.to_string()))?,
        None => return Err(EnvelopeError::MissingVersion),
    };
    let name = obj
        .get("kind")
        .and_then(|k| k.as_str())
        .ok_or(EnvelopeError::MissingKind)?;
    let kind = Kind::from_name(name).ok_or_else(|| EnvelopeError::UnknownKind(name.to_owned()))?;
    Ok(Envelope {
        version,
        kind,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_round_trip_through_their_names() {
        for k in [Kind::Hello, Kind::Invocation] {
            assert_eq!(Kind::from_name(k.as_str()), Some(k));
        }
        assert_eq!(Kind::from_name("metrics"), None);
    }

    #[test]
    fn every_accepted_version_and_kind_passes() {
        for v in PROTOCOL_VERSIONS {
            for kind in ["hello", "invocation"] {
                let text = format!(r#"{{"v":{v},"kind":"{kind}","pid":8}}"#);
                let e = parse_envelope(text.as_bytes()).unwrap();
                assert_eq!((e.version, e.kind.as_str()), (v, kind));
                assert_eq!(e.body["pid"], 8);
            }
        }
    }

    #[test]
    fn each_fault_has_its_reason() {
        let big = vec![b' '; MAX_DATAGRAM + 1];
        assert_eq!(
            parse_envelope(&big),
            Err(EnvelopeError::Oversized(MAX_DATAGRAM + 1))
        );
        assert!(matches!(
            parse_envelope(b"nope"),
            Err(EnvelopeError::NotJson { line: 1, .. })
        ));
        assert_eq!(parse_envelope(b"[1]"), Err(EnvelopeError::NotAnObject));
        assert_eq!(
            parse_envelope(br#"{"kind":"hello"}"#),
            Err(EnvelopeError::MissingVersion)
        );
        // The version is judged before the kind.
        assert_eq!(
            parse_envelope(br#"{"v":3}"#),
            Err(EnvelopeError::UnknownVersion("3".into()))
        );
        assert_eq!(
            parse_envelope(br#"{"v":1,"kind":7}"#),
            Err(EnvelopeError::MissingKind)
        );
        assert_eq!(
            parse_envelope(br#"{"v":2,"kind":"metrics"}"#),
            Err(EnvelopeError::UnknownKind("metrics".into()))
        );
        assert_eq!(
            EnvelopeError::Oversized(20_000).to_string(),
            "datagram of 20000 bytes exceeds the 16384-byte limit"
        );
    }

    #[test]
    fn a_datagram_at_the_limit_is_read() {
        let head = r#"{"v":1,"kind":"hello","pad":""#;
        let pad = "x".repeat(MAX_DATAGRAM - head.len() - 2);
        let text = format!("{head}{pad}\"}}");
        assert_eq!(text.len(), MAX_DATAGRAM);
        assert!(parse_envelope(text.as_bytes()).is_ok());
    }
}
