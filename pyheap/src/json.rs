//! The few JSON pieces of the invocation record, written the way the decorator's pure-Python
//! encoder writes them (`_handoff.py`), byte for byte: strings escaped as
//! `json.encoder.encode_basestring_ascii` does, integers in decimal, fixed-point floats as
//! `'%.Nf' %` rounds them (both round the exact binary value, ties to even).
//!
//! `record` (FFI) builds the record from these; tests/python/test_native_record.py checks the two
//! encoders against each other on every interpreter.

use std::io::Write;

/// Appends `s` as a JSON string: ASCII only, `"` and `\` escaped, the five short escapes, every
/// other character outside printable ASCII as `\uXXXX` (lowercase hex, a surrogate pair above
/// the BMP).
pub fn push_str(out: &mut Vec<u8>, s: &str) {
    out.push(b'"');
    for c in s.chars() {
        match c {
            '"' => out.extend_from_slice(b"\\\""),
            '\\' => out.extend_from_slice(b"\\\\"),
            '\n' => out.extend_from_slice(b"\\n"),
            '\r' => out.extend_from_slice(b"\\r"),
            '\t' => out.extend_from_slice(b"\\t"),
            '\u{8}' => out.extend_from_slice(b"\\b"),
            '\u{c}' => out.extend_from_slice(b"\\f"),
            ' '..='~' => out.push(c as u8),
            _ => {
                let mut units = [0u16; 2];
                for unit in c.encode_utf16(&mut units) {
                    // ok: writing into a Vec cannot fail.
                    let _ = write!(out, "\\u{unit:04x}");
                }
            }
        }
    }
    out.push(b'"');
}

/// Appends a signed integer in decimal.
pub fn push_int(out: &mut Vec<u8>, v: i64) {
    // ok: writing into a Vec cannot fail.
    let _ = write!(out, "{v}");
}

/// Appends `v` with `decimals` digits after the point; false (nothing written) when `v` is not
/// finite, which the Python encoder would write as `inf` / `nan` (the caller leaves such a
/// record to it).
pub fn push_fixed(out: &mut Vec<u8>, v: f64, decimals: usize) -> bool {
    if !v.is_finite() {
        return false;
    }
    // ok: writing into a Vec cannot fail.
    let _ = write!(out, "{v:.decimals$}");
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    fn s(text: &str) -> String {
        let mut out = Vec::new();
        push_str(&mut out, text);
        String::from_utf8(out).unwrap_or_default()
    }

    #[test]
    fn strings_are_escaped_as_ascii_json() {
        assert_eq!(s("abc-123"), r#""abc-123""#);
        assert_eq!(s("a\"b\\c"), r#""a\"b\\c""#);
        assert_eq!(s("\n\r\t\u{8}\u{c}"), r#""\n\r\t\b\f""#);
        assert_eq!(s("\u{1}\u{1f}\u{7f}"), r#""\u0001\u001f\u007f""#);
        assert_eq!(s("é€"), r#""\u00e9\u20ac""#);
        assert_eq!(s("😀"), r#""\ud83d\ude00""#);
        assert_eq!(s(""), r#""""#);
    }

    #[test]
    fn fixed_point_rounds_ties_to_even_on_the_binary_value() {
        let f = |v: f64, d: usize| {
            let mut out = Vec::new();
            assert!(push_fixed(&mut out, v, d));
            String::from_utf8(out).unwrap_or_default()
        };
        // What Python's '%.1f' / '%.3f' give for the same values.
        assert_eq!(f(0.25, 1), "0.2");
        assert_eq!(f(0.35, 1), "0.3");
        assert_eq!(f(0.0625, 3), "0.062");
        assert_eq!(f(0.0005, 3), "0.001");
        assert_eq!(f(-0.0, 1), "-0.0");
        assert_eq!(f(1_764_657_732_123.45, 1), "1764657732123.4");
        assert_eq!(f(1e20, 1), "100000000000000000000.0");
        let mut out = Vec::new();
        assert!(!push_fixed(&mut out, f64::NAN, 1));
        assert!(!push_fixed(&mut out, f64::INFINITY, 3));
        assert!(out.is_empty());
    }

    #[test]
    fn integers_in_decimal() {
        let mut out = Vec::new();
        push_int(&mut out, -42);
        out.push(b',');
        push_int(&mut out, i64::MAX);
        assert_eq!(out, b"-42,9223372036854775807");
    }
}
