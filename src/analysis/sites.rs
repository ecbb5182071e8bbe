//! Allocation sites that keep memory across invocations, from the traced invocations' top sites.
//!
//! A traced invocation names the sites of the blocks it allocated and still holds at its end
//! (the decorator names the newest frame of the function's own code, with the allocating library
//! line as `via`). Holding is not growing: a bounded cache holds a new entry but freed an older
//! one. So each traced invocation's sites are weighted by a net share — how much of what it held
//! the process really keeps per invocation, from the growth of resident anonymous memory (a net,
//! byte-valued figure), clamped to 0..1 — and ranked by the weighted bytes.
//!
//! When the records carry the native sampler's sites ([`HeapSiteGrowth`]), each names the change
//! of its site's live bytes since the previous record, which sees frees of memory allocated at
//! any time: the sum of those changes over the window is the site's net growth, and it ranks the
//! sites instead (the traced ranking stays the fallback).

use std::collections::{HashMap, VecDeque};

/// One site as a traced invocation reported it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct SiteSample<'a> {
    /// `file:line` of the newest frame in the function's own code.
    pub site: &'a str,
    /// `file:line` of the allocating frame, when it is another (a library's).
    pub via: Option<&'a str>,
    /// Bytes allocated there during the invocation and still live at its end.
    pub bytes: u64,
}

/// A site and what it kept, on average over the traced invocations (or, from the native
/// sampler's records, over the window: see [`HeapSiteGrowth::top`]). The field names are the leak
/// line's, which the report reads.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GrowingSite {
    /// `file:line` of the newest frame in the function's own code.
    pub site: String,
    /// `file:line` of the allocating library frame last named for it; `None` (omitted) if none.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// The ranking figure, bytes per invocation: weighted bytes per traced invocation (held ×
    /// net share); from the sampler, the site's net growth per record of the window.
    pub bytes_per_traced_invoke: f64,
    /// Bytes held at the end of a traced invocation it appeared in, on average (unweighted);
    /// from the sampler, the site's estimated live bytes as last named.
    pub held_bytes_per_traced_invoke: f64,
    /// Traced invocations (from the sampler: records of the window) that named this site.
    pub seen_in: u32,
}

#[derive(Debug, Clone, Default)]
struct SiteTotals {
    via: Option<String>,
    weighted_bytes: f64,
    held_bytes: f64,
    invocations: u32,
}

/// Sites tracked at most; the smallest are dropped beyond it so memory stays bounded.
const MAX_SITES: usize = 256;

/// Running totals of the sites of one execution environment.
#[derive(Debug, Clone, Default)]
pub struct SiteGrowth {
    sites: HashMap<String, SiteTotals>,
    traced_invocations: u32,
}

impl SiteGrowth {
    /// Adds one traced invocation: its sites and its net share (kept / held, any real number).
    pub fn observe<'a>(&mut self, sites: impl IntoIterator<Item = SiteSample<'a>>, net_share: f64) {
        let share = if net_share.is_finite() {
            net_share.clamp(0.0, 1.0)
        } else {
            0.0
        };
        self.traced_invocations = self.traced_invocations.saturating_add(1);
        for s in sites {
            let totals = self.sites.entry(s.site.to_owned()).or_default();
            totals.weighted_bytes += s.bytes as f64 * share;
            totals.held_bytes += s.bytes as f64;
            totals.invocations = totals.invocations.saturating_add(1);
            if let Some(via) = s.via {
                if totals.via.as_deref() != Some(via) {
                    totals.via = Some(via.to_owned());
                }
            }
        }
        if self.sites.len() > MAX_SITES {
            let mut by_size: Vec<(String, f64)> = self
                .sites
                .iter()
                .map(|(k, v)| (k.clone(), v.weighted_bytes))
                .collect();
            by_size.sort_by(|a, b| b.1.total_cmp(&a.1));
            for (site, _) in by_size.into_iter().skip(MAX_SITES) {
                self.sites.remove(&site);
            }
        }
    }

    /// The `n` sites with the most net growth, largest first; sites with none are left out.
    pub fn top(&self, n: usize) -> Vec<GrowingSite> {
        let traced = f64::from(self.traced_invocations.max(1));
        let out: Vec<GrowingSite> = self
            .sites
            .iter()
            .filter(|(_, t)| t.weighted_bytes > 0.0)
            .map(|(site, t)| GrowingSite {
                site: site.clone(),
                via: t.via.clone(),
                bytes_per_traced_invoke: t.weighted_bytes / traced,
                held_bytes_per_traced_invoke: t.held_bytes / f64::from(t.invocations.max(1)),
                seen_in: t.invocations,
            })
            .collect();
        largest_first(out, n)
    }
}

/// The `n` sites growing the most, largest first (ties by name, so the order is stable).
fn largest_first(mut sites: Vec<GrowingSite>, n: usize) -> Vec<GrowingSite> {
    sites.sort_by(|a, b| {
        b.bytes_per_traced_invoke
            .total_cmp(&a.bytes_per_traced_invoke)
            .then_with(|| a.site.cmp(&b.site))
    });
    sites.truncate(n);
    sites
}

/// One site as a record of the native sampler named it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct HeapSiteSample<'a> {
    /// `file:line` of the newest frame in the function's own code.
    pub site: &'a str,
    /// `file:line` of the allocating frame, when it is another (a library's).
    pub via: Option<&'a str>,
    /// Change of the site's estimated live bytes since the previous record.
    pub delta_bytes: i64,
    /// The site's estimated live bytes now.
    pub live_bytes: Option<u64>,
}

#[derive(Debug, Clone, Default)]
struct HeapSiteTotals {
    via: Option<String>,
    /// Sum of the site's changes over the records in the window.
    delta_bytes: i64,
    live_bytes: Option<u64>,
    /// Records in the window that named the site.
    records: u32,
}

/// Sites one record contributes at most (a record's list is bounded by the datagram already).
const MAX_SITES_PER_RECORD: usize = 64;

/// The net growth of each site over the last `window` invocations, from the sampler's per-record
/// changes. Memory is bounded: `window` records of at most 64 sites (`MAX_SITES_PER_RECORD`).
#[derive(Debug, Clone)]
pub struct HeapSiteGrowth {
    window: u64,
    /// `(invocation, [(site, delta)])` of the records in the window, oldest first.
    records: VecDeque<(u64, Vec<(String, i64)>)>,
    sites: HashMap<String, HeapSiteTotals>,
}

impl HeapSiteGrowth {
    /// Empty totals over the last `window` invocations (`LMP_LEAK_WINDOW`; at least 1).
    pub fn new(window: usize) -> Self {
        Self {
            window: window.max(1) as u64,
            records: VecDeque::new(),
            sites: HashMap::new(),
        }
    }

    /// Adds the sites of the record of invocation `invocation` (increasing); a record naming no
    /// site still counts as one invocation of the window.
    pub fn observe<'a>(
        &mut self,
        invocation: u64,
        sites: impl IntoIterator<Item = HeapSiteSample<'a>>,
    ) {
        let mut deltas = Vec::new();
        for s in sites.into_iter().take(MAX_SITES_PER_RECORD) {
            let totals = self.sites.entry(s.site.to_owned()).or_default();
            totals.delta_bytes = totals.delta_bytes.saturating_add(s.delta_bytes);
            totals.records = totals.records.saturating_add(1);
            if s.live_bytes.is_some() {
                totals.live_bytes = s.live_bytes;
            }
            if let Some(via) = s.via {
                if totals.via.as_deref() != Some(via) {
                    totals.via = Some(via.to_owned());
                }
            }
            deltas.push((s.site.to_owned(), s.delta_bytes));
        }
        self.records.push_back((invocation, deltas));
        while self
            .records
            .front()
            .is_some_and(|(at, _)| *at + self.window <= invocation)
        {
            let Some((_, old)) = self.records.pop_front() else {
                break;
            };
            for (site, delta) in old {
                if let Some(t) = self.sites.get_mut(&site) {
                    t.delta_bytes = t.delta_bytes.saturating_sub(delta);
                    t.records = t.records.saturating_sub(1);
                    if t.records == 0 {
                        self.sites.remove(&site);
                    }
                }
            }
        }
    }

    /// True once a record in the window named a site: the ranking to use.
    pub fn has_sites(&self) -> bool {
        !self.sites.is_empty()
    }

    /// The `n` sites with the most net growth over the window, largest first; sites that did
    /// not grow are left out. `bytes_per_traced_invoke` is the net growth per record of the
    /// window, `held_bytes_per_traced_invoke` the site's live bytes as last named.
    pub fn top(&self, n: usize) -> Vec<GrowingSite> {
        let records = self.records.len().max(1) as f64;
        let out: Vec<GrowingSite> = self
            .sites
            .iter()
            .filter(|(_, t)| t.delta_bytes > 0)
            .map(|(site, t)| GrowingSite {
                site: site.clone(),
                via: t.via.clone(),
                bytes_per_traced_invoke: t.delta_bytes as f64 / records,
                held_bytes_per_traced_invoke: t.live_bytes.unwrap_or(0) as f64,
                seen_in: t.records,
            })
            .collect();
        largest_first(out, n)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(site: &str, bytes: u64) -> SiteSample<'_> {
        SiteSample {
            site,
            via: None,
            bytes,
        }
    }

    #[test]
    fn net_growth_outranks_churn() {
        let mut g = SiteGrowth::default();
        for _ in 0..4 {
            // A leaking invocation: everything it keeps is net growth.
            g.observe([sample("app.py:10", 10_000), sample("lib.py:5", 100)], 1.0);
            // A cache invocation: holds an entry but evicted an older one — no net growth.
            g.observe([sample("cache.py:3", 50_000)], 0.0);
        }
        let top = g.top(5);
        assert_eq!(top[0].site, "app.py:10");
        assert_eq!(top[0].seen_in, 4);
        assert!((top[0].bytes_per_traced_invoke - 5_000.0).abs() < 1e-9);
        assert!((top[0].held_bytes_per_traced_invoke - 10_000.0).abs() < 1e-9);
        assert!(top.iter().all(|s| s.site != "cache.py:3"));
    }

    #[test]
    fn the_library_line_is_kept_beside_the_users() {
        let mut g = SiteGrowth::default();
        g.observe(
            [SiteSample {
                site: "app.py:42",
                via: Some("json/decoder.py:353"),
                bytes: 4096,
            }],
            1.0,
        );
        let top = g.top(1);
        assert_eq!(top[0].via.as_deref(), Some("json/decoder.py:353"));
        let line = serde_json::to_value(&top[0]).unwrap();
        assert_eq!(line["site"], "app.py:42");
        assert_eq!(line["via"], "json/decoder.py:353");
    }

    #[test]
    fn shares_out_of_range_are_clamped() {
        let mut g = SiteGrowth::default();
        g.observe([sample("a.py:1", 1000)], 7.5);
        g.observe([sample("a.py:1", 1000)], f64::NAN);
        g.observe([sample("a.py:1", 1000)], -3.0);
        let top = g.top(1);
        assert!((top[0].bytes_per_traced_invoke - 1000.0 / 3.0).abs() < 1e-9);
    }

    #[test]
    fn stays_bounded() {
        let mut g = SiteGrowth::default();
        for i in 0..1_000u64 {
            let site = format!("f.py:{i}");
            g.observe([sample(&site, i + 1)], 1.0);
        }
        assert!(g.sites.len() <= MAX_SITES);
        assert_eq!(g.top(1)[0].site, "f.py:999");
    }
}

#[cfg(test)]
mod heap_tests {
    use super::*;

    fn s(site: &str, delta_bytes: i64) -> HeapSiteSample<'_> {
        HeapSiteSample {
            site,
            via: None,
            delta_bytes,
            live_bytes: None,
        }
    }

    #[test]
    fn net_growth_over_the_window_ranks_the_sites() {
        let mut g = HeapSiteGrowth::new(40);
        for i in 0..40u64 {
            let mut samples = Vec::new();
            // A leak: one sample of 64 KiB every fourth record.
            if i % 4 == 0 {
                samples.push(s("leak.py:3", 65_536));
            }
            // A cache: as much allocated as freed, at the same line.
            samples.push(s("cache.py:9", if i % 2 == 0 { 131_072 } else { -131_072 }));
            // Transient: freed in the next record.
            if i % 10 == 5 {
                samples.push(s("tmp.py:1", 1_000_000));
            }
            if i % 10 == 6 {
                samples.push(s("tmp.py:1", -1_000_000));
            }
            g.observe(i, samples);
        }
        let top = g.top(5);
        assert_eq!(top.len(), 1, "{top:?}");
        assert_eq!(top[0].site, "leak.py:3");
        assert_eq!(top[0].seen_in, 10);
        assert!((top[0].bytes_per_traced_invoke - 16_384.0).abs() < 1e-9);
        assert!(g.has_sites());
    }

    #[test]
    fn only_the_window_counts() {
        let mut g = HeapSiteGrowth::new(10);
        // Grew early, then shrank: over the last 10 records it shrinks.
        for i in 0..10u64 {
            g.observe(i, [s("a.py:1", 10_000)]);
        }
        assert_eq!(g.top(1)[0].site, "a.py:1");
        for i in 10..20u64 {
            g.observe(i, [s("a.py:1", -1_000)]);
        }
        assert!(g.top(1).is_empty(), "{:?}", g.top(1));
        // Records that name nothing still count as invocations of the window; a site no
        // record of the window names is forgotten.
        for i in 20..30u64 {
            g.observe(i, []);
        }
        assert!(!g.has_sites());
        g.observe(30, [s("b.py:2", 5_000)]);
        let top = g.top(1);
        assert!(
            (top[0].bytes_per_traced_invoke - 500.0).abs() < 1e-9,
            "{top:?}"
        );
    }

    #[test]
    fn the_library_line_and_live_bytes_are_kept() {
        let mut g = HeapSiteGrowth::new(40);
        g.observe(
            1,
            [HeapSiteSample {
                site: "app.py:42",
                via: Some("json/decoder.py:353"),
                delta_bytes: 65_600,
                live_bytes: Some(1_312_000),
            }],
        );
        g.observe(2, [s("app.py:42", 65_600)]);
        let top = g.top(1);
        assert_eq!(top[0].via.as_deref(), Some("json/decoder.py:353"));
        assert_eq!(top[0].held_bytes_per_traced_invoke, 1_312_000.0);
        assert_eq!(top[0].bytes_per_traced_invoke, 65_600.0);
        assert_eq!(top[0].seen_in, 2);
    }

    #[test]
    fn stays_bounded() {
        let mut g = HeapSiteGrowth::new(40);
        for i in 0..1_000u64 {
            let names: Vec<String> = (0..200).map(|k| format!("f{i}.py:{k}")).collect();
            g.observe(i, names.iter().map(|n| s(n, 1)));
        }
        assert!(g.sites.len() <= 40 * MAX_SITES_PER_RECORD);
        assert!(g.records.len() <= 40);
    }
}
