//! What the uploader tells the status: its state word for each phase (`checking`,
//! `idle`, `uploading`, `window closed`, `budget spent`, …), with the reason and time
//! where the verdict gives one, and the link's figures (see [`crate::upload::state`]).

use std::time::Duration;

use tokio::time::Instant;

use super::{Phase, Uploader};
use crate::upload::sink::Sink;
use crate::upload::state::short_reason;

impl<S: Sink> Uploader<S> {
    /// The state word of `phase`, where the phase alone tells it (backing off and offline
    /// are noted with their reason where the verdict is read). A check after a refusal or
    /// an outage keeps showing that until it passes.
    pub(super) fn note_phase(&self, phase: &Phase) {
        let st = &self.stats.state;
        st.link(
            match phase {
                Phase::Closed { until, .. } => {
                    Some(until.saturating_duration_since(Instant::now()))
                }
                _ => None,
            },
            self.cfg.link.max_rate,
            self.link.bytes_per_sec(),
        );
        match phase {
            Phase::Checking => {
                if !matches!(st.word().as_str(), "refused" | "offline" | "backing off") {
                    st.set("checking", None, None);
                }
            }
            Phase::Recovering => st.set("recovering", None, None),
            Phase::Idle => st.set("idle", None, None),
            Phase::Filling { .. } | Phase::Sending { .. } => st.set("uploading", None, None),
            Phase::BackingOff { .. } | Phase::Offline { .. } => {}
            Phase::Closed { until, .. } => st.set(
                "window closed",
                None,
                Some(until.saturating_duration_since(Instant::now())),
            ),
            Phase::Spent { until, .. } => st.set(
                "budget spent",
                None,
                Some(until.saturating_duration_since(Instant::now())),
            ),
        }
    }

    /// A transient failure: backing off for `d`.
    pub(super) fn note_backoff(&self, reason: &str, d: Duration) {
        self.stats.state.set(
            "backing off",
            Some(short_reason("backing off", reason)),
            Some(d),
        );
        self.stats.state.error(reason);
    }

    /// A refusal an operator must fix.
    pub(super) fn note_refusal(&self, reason: &str, d: Duration) {
        self.stats.state.set_with_link(
            "refused",
            Some(short_reason("refused", reason)),
            Some(d),
            true,
        );
        self.stats.state.error(reason);
    }
}
