//! Allocation sites that keep memory across invocations, from the traced invocations' top sites.
//!
//! A traced invocation names the sites of the blocks it allocated and still holds at its end
//! (the decorator names the newest frame of the function's own code, with the allocating library
//! line as `via`). Holding is not growing: a bounded cache holds a new entry but freed an older
//! one. So each traced invocation's sites are weighted by a net share — how much of what it held
//! the process really keeps per invocation, from the growth of resident anonymous memory (a net,
//! byte-valued figure), clamped to 0..1 — and ranked by the weighted bytes.

use std::collections::HashMap;

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

/// A site and what it kept, on average over the traced invocations.
#[derive(Debug, Clone, PartialEq, serde::Serialize)]
pub struct GrowingSite {
    pub site: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub via: Option<String>,
    /// Weighted bytes per traced invocation: held × net share (the ranking figure).
    pub bytes_per_traced_invoke: f64,
    /// Bytes held at the end of a traced invocation it appeared in, on average (unweighted).
    pub held_bytes_per_traced_invoke: f64,
    /// Traced invocations that named this site.
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
        let mut out: Vec<GrowingSite> = self
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
        out.sort_by(|a, b| {
            b.bytes_per_traced_invoke
                .total_cmp(&a.bytes_per_traced_invoke)
                .then_with(|| a.site.cmp(&b.site))
        });
        out.truncate(n);
        out
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
