//! Every example record of docs/protocol.md (`tests/fixtures/protocol/*.json`) has a valid
//! envelope: within the size limit, an accepted version, the kind its file name says.
// Tests and benchmarks may fail loudly on what they set up themselves.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use lmp_protocol::{parse_envelope, Kind, HEAP_SINCE_VERSION, MAX_DATAGRAM, PROTOCOL_VERSIONS};
use std::path::PathBuf;

fn fixtures() -> Vec<(String, Vec<u8>)> {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../tests/fixtures/protocol");
    let mut out: Vec<(String, Vec<u8>)> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .map(|p| {
            let name = p.file_name().unwrap().to_string_lossy().into_owned();
            (name, std::fs::read(&p).unwrap())
        })
        .collect();
    out.sort();
    out
}

#[test]
fn every_fixture_has_a_valid_envelope() {
    let all = fixtures();
    assert!(
        all.len() >= 6,
        "{:?}",
        all.iter().map(|f| &f.0).collect::<Vec<_>>()
    );
    let mut versions = Vec::new();
    for (name, bytes) in &all {
        assert!(bytes.len() <= MAX_DATAGRAM, "{name}");
        let e = parse_envelope(bytes).unwrap_or_else(|e| panic!("{name}: {e}"));
        let kind = name.split(['-', '.']).next().unwrap();
        assert_eq!(Kind::from_name(kind), Some(e.kind), "{name}");
        // A `heap` object belongs to version 2 on: a version 1 example never shows one.
        if e.body.get("heap").is_some() {
            assert!(e.version >= HEAP_SINCE_VERSION, "{name}");
        }
        versions.push(e.version);
    }
    for v in PROTOCOL_VERSIONS {
        assert!(versions.contains(&v), "no example of version {v}");
    }
}
