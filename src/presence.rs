//! Whether a decorator is there to wait for.
//!
//! An `end` flush holds the invocation (billed time) until the decorator's record arrives, which
//! is worth it only when a record will come. The decorator says hello when it wraps a handler
//! (during init), so a function whose code never imports it (no layer import, a Node.js or Java
//! runtime, the no-code wrapper not set) is never waited for. A process that said hello but whose
//! invocations bring no record (it decorated something else than the handler) stops being
//! waited for after [`SILENT_INVOCATIONS`] such invocations in a row, until a record arrives.
//!
//! This decides only the wait. The join keeps expecting records once a hello came: a record that
//! is merely late still joins its invocation instead of arriving after it was published.

/// Invocations in a row without a record after which the extension stops waiting for one.
pub const SILENT_INVOCATIONS: u32 = 3;

/// What the extension knows of the decorator, fed with INVOKEs, hellos and records.
#[derive(Debug, Default)]
pub struct DecoratorPresence {
    /// A hello or a record arrived (from any process of this environment).
    seen: bool,
    /// Records since the last INVOKE.
    records_since_invoke: u64,
    /// At least one INVOKE came (so `records_since_invoke` covers a whole invocation).
    invoked: bool,
    /// Invocations in a row that ended without a record.
    silent: u32,
    /// Learned absent: no wait until a record arrives.
    absent: bool,
}

/// A change worth one log line.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Change {
    /// Invocations brought no record: the extension stops waiting for them.
    WentSilent,
    /// A record arrived after the extension stopped waiting: it waits again.
    CameBack,
}

impl DecoratorPresence {
    /// A `hello`: the decorator wraps a handler in this environment's runtime.
    pub fn on_hello(&mut self) {
        self.seen = true;
    }

    /// An invocation record arrived.
    pub fn on_record(&mut self) -> Option<Change> {
        self.seen = true;
        self.records_since_invoke = self.records_since_invoke.saturating_add(1);
        self.silent = 0;
        let back = std::mem::replace(&mut self.absent, false);
        back.then_some(Change::CameBack)
    }

    /// An INVOKE: the invocation before it is over (its record, if any, was sent before its
    /// response), so it is counted as silent or not.
    pub fn on_invoke(&mut self) -> Option<Change> {
        let mut change = None;
        if self.seen && self.invoked && !self.absent {
            if self.records_since_invoke == 0 {
                self.silent = self.silent.saturating_add(1);
                if self.silent >= SILENT_INVOCATIONS {
                    self.absent = true;
                    change = Some(Change::WentSilent);
                }
            } else {
                self.silent = 0;
            }
        }
        self.invoked = true;
        self.records_since_invoke = 0;
        change
    }

    /// Should the end of this invocation wait for the decorator's record?
    pub fn expect_record(&self) -> bool {
        self.seen && !self.absent
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nothing_is_awaited_from_a_function_that_never_said_hello() {
        let mut p = DecoratorPresence::default();
        for _ in 0..100 {
            assert_eq!(p.on_invoke(), None);
            assert!(!p.expect_record());
        }
    }

    #[test]
    fn a_decorated_function_is_awaited_from_its_first_invocation() {
        let mut p = DecoratorPresence::default();
        p.on_hello();
        for _ in 0..100 {
            assert_eq!(p.on_invoke(), None);
            assert!(p.expect_record());
            p.on_record();
        }
    }

    #[test]
    fn silent_invocations_stop_the_wait_until_a_record_comes() {
        let mut p = DecoratorPresence::default();
        p.on_hello();
        // The first INVOKE closes no invocation; then SILENT_INVOCATIONS silent ones.
        assert_eq!(p.on_invoke(), None);
        for _ in 1..SILENT_INVOCATIONS {
            assert_eq!(p.on_invoke(), None);
            assert!(p.expect_record());
        }
        assert_eq!(p.on_invoke(), Some(Change::WentSilent));
        assert!(!p.expect_record());
        assert_eq!(p.on_invoke(), None, "logged once");
        assert_eq!(p.on_record(), Some(Change::CameBack));
        assert!(p.expect_record());
        assert_eq!(p.on_record(), None);
    }

    #[test]
    fn an_occasional_missing_record_does_not_stop_the_wait() {
        let mut p = DecoratorPresence::default();
        p.on_hello();
        for i in 0..200u32 {
            assert_eq!(p.on_invoke(), None, "invocation {i}");
            // Two of every three invocations bring their record (a lossy path).
            if i % 3 != 0 {
                p.on_record();
            }
        }
        assert!(p.expect_record());
    }
}
