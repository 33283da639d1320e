//! The link policy's part of the uploader: upload windows. Outside every window the
//! uploader is in [`Phase::Closed`] (state `window closed until …`): nothing is sent,
//! operations already under way are still followed. A batch sent inside a window is
//! given a stop signal that fires at the window's end, so the sink stops it there; its
//! unsent frames stay queued for the next window.

use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;
use tracing::info;

use super::{Phase, Uploader};
use crate::upload::sink::Sink;
use crate::upload::stopped;

impl<S: Sink> Uploader<S> {
    /// How long until an upload window opens; `None` while one is open (or none is
    /// configured).
    pub(super) fn window_wait(&self) -> Option<Duration> {
        let w = &self.cfg.link.windows;
        if w.is_always() {
            return None;
        }
        w.until_active(&self.clock.now())
    }

    /// The stop signal a batch is sent with: the daemon's, and the end of the current
    /// upload window (the batch stops there; its unsent frames stay queued).
    pub(super) fn batch_stop(
        &self,
    ) -> (watch::Receiver<bool>, Option<tokio::task::JoinHandle<()>>) {
        let w = &self.cfg.link.windows;
        let Some(closes_in) = (!w.is_always())
            .then(|| w.until_inactive(&self.clock.now()))
            .flatten()
        else {
            return (self.stop.clone(), None);
        };
        let (tx, rx) = watch::channel(*self.stop.borrow());
        let stop = self.stop.clone();
        let task = tokio::spawn(async move {
            tokio::select! {
                _ = stopped(&stop) => {}
                _ = tokio::time::sleep(closes_in) => {
                    info!("upload window closing: the batch under way stops; its unsent frames stay queued");
                }
            }
            let _ = tx.send(true);
        });
        (rx, Some(task))
    }

    /// Outside the upload windows: wait for the next one (operations followed meanwhile).
    pub(super) async fn closed(&mut self, until: Instant, since: Option<Instant>) -> Option<Phase> {
        if self.pause_until(until).await {
            return None;
        }
        match self.window_wait() {
            Some(wait) => Some(Phase::Closed {
                until: Instant::now() + wait,
                since,
            }),
            None => {
                info!("upload window open: uploading");
                Some(self.after(since))
            }
        }
    }
}

/// Protocol overhead counted against the byte budgets per frame sent: its request line,
/// headers and TLS records (a storage PUT or form POST), and its share of the metadata
/// and registration calls. Measured on the fake servers' requests: 600–900 bytes.
pub const OVERHEAD_PER_FRAME: u64 = 1_000;
/// Overhead counted per batch: the session or registration round trips, the bulk
/// metadata call's envelope, status polls.
pub const OVERHEAD_PER_BATCH: u64 = 4_000;
/// With `budget_reserve_for_newest`, the last tenth of a budget goes to the newest
/// frames.
const RESERVE_DIVISOR: u64 = 10;

/// Where the byte budgets stand now.
#[derive(Debug, Clone)]
pub(super) struct BudgetNow {
    /// Today's local date and the first day of the budget month (the ledger's keys).
    pub(super) day: String,
    pub(super) period: String,
    /// Bytes that may still be sent (the smaller of the day's and the month's).
    pub(super) left: u64,
    /// Within the reserve for the newest frames.
    pub(super) in_reserve: bool,
    /// Until the budget that is spent starts again.
    pub(super) until_reset: Duration,
}

/// Bytes left at which a budget counts as spent: not even one frame's and one batch's
/// overhead fits.
const SPENT_AT: u64 = OVERHEAD_PER_BATCH + OVERHEAD_PER_FRAME;

impl BudgetNow {
    /// Nothing more may be sent before the reset.
    pub(super) fn spent(&self) -> bool {
        self.left <= SPENT_AT
    }
}

/// The first day of the budget month `now` is in, and the first day of the next one.
fn budget_month(
    now: &jiff::Zoned,
    reset_day: u8,
) -> Option<(jiff::civil::Date, jiff::civil::Date)> {
    use jiff::ToSpan;
    let d = now.date();
    let this = jiff::civil::Date::new(d.year(), d.month(), i8::try_from(reset_day).ok()?).ok()?;
    let start = if d >= this {
        this
    } else {
        this.checked_sub(1.month()).ok()?
    };
    Some((start, start.checked_add(1.month()).ok()?))
}

/// The local midnight starting `date`.
fn midnight(now: &jiff::Zoned, date: jiff::civil::Date) -> Option<jiff::Zoned> {
    date.to_datetime(jiff::civil::Time::midnight())
        .to_zoned(now.time_zone().clone())
        .ok()
}

impl<S: Sink> Uploader<S> {
    /// The budgets now, or `None` without any.
    pub(super) fn budget_now(&self) -> Option<BudgetNow> {
        use jiff::ToSpan;
        let l = &self.cfg.link;
        if l.daily_budget.is_none() && l.monthly_budget.is_none() {
            return None;
        }
        let now = self.clock.now();
        // reset_day is 1 to 28, so the month always has it; were it not, the budget month
        // would be the calendar month rather than no budget at all.
        let (start, next) = budget_month(&now, l.reset_day)
            .or_else(|| budget_month(&now, 1))
            .unwrap_or((now.date(), now.date()));
        let day = now.date().to_string();
        let period = start.to_string();
        let sent = self.queue.sent().at(&day, &period);
        let until = |at: Option<jiff::Zoned>| {
            at.map_or(Duration::from_secs(3600), |at| {
                now.duration_until(&at)
                    .unsigned_abs()
                    .max(Duration::from_secs(1))
            })
        };
        let tomorrow = now.date().checked_add(1.day()).ok();
        let daily = l.daily_budget.map(|b| {
            (
                b,
                b.saturating_sub(sent.day_bytes),
                until(tomorrow.and_then(|d| midnight(&now, d))),
            )
        });
        let monthly = l.monthly_budget.map(|b| {
            (
                b,
                b.saturating_sub(sent.period_bytes),
                until(midnight(&now, next)),
            )
        });
        let (mut left, mut until_reset, mut in_reserve) = (u64::MAX, Duration::ZERO, false);
        for (budget, rest, reset) in [daily, monthly].into_iter().flatten() {
            if rest < left {
                left = rest;
            }
            if rest <= SPENT_AT {
                until_reset = until_reset.max(reset);
            }
            in_reserve |= l.reserve_for_newest && rest <= budget / RESERVE_DIVISOR;
        }
        self.stats
            .state
            .budget(sent.day_bytes, sent.period_bytes, Some(left));
        Some(BudgetNow {
            day,
            period,
            left,
            in_reserve,
            until_reset,
        })
    }

    /// The budget is spent: wait for its reset (operations followed meanwhile).
    pub(super) async fn spent(&mut self, until: Instant, since: Option<Instant>) -> Option<Phase> {
        if self.pause_until(until).await {
            return None;
        }
        match self.budget_now() {
            Some(b) if b.spent() => Some(Phase::Spent {
                until: Instant::now() + b.until_reset,
                since,
            }),
            _ => {
                info!("byte budget available again: uploading");
                Some(self.after(since))
            }
        }
    }
}
