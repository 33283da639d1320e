//! The lifetime counters as the tests read them (`queue stats --json`, the status file):
//! every counter, "never behind", and the sum they must add up to.

use std::collections::BTreeMap;

use serde_json::Value;

/// Every lifetime counter of a `queue stats --json` or status file.
pub fn counters(v: &Value) -> BTreeMap<String, u64> {
    v["counters"]
        .as_object()
        .unwrap()
        .iter()
        .filter_map(|(k, v)| Some((k.clone(), v.as_u64()?)))
        .collect()
}

/// Fails naming every counter of `now` below its value in `before`.
pub fn assert_not_behind(before: &BTreeMap<String, u64>, now: &BTreeMap<String, u64>, when: &str) {
    let back: Vec<String> = before
        .iter()
        .filter(|(k, v)| now.get(*k).copied().unwrap_or(0) < **v)
        .map(|(k, v)| format!("{k}: {v} -> {}", now.get(k).copied().unwrap_or(0)))
        .collect();
    assert!(back.is_empty(), "{when}: counters went backwards: {back:?}");
}

/// `committed = uploaded + pending + in flight + dead + evicted + purged + quarantined +
/// index_dropped` (no file is touched outside edgecap in these tests).
pub fn assert_adds_up(s: &Value, when: &str) {
    let c = &s["counters"];
    let n = |v: &Value| v.as_u64().unwrap_or(0);
    let right = n(&c["uploaded"])
        + n(&s["pending"]["frames"])
        + n(&s["inflight"]["frames"])
        + n(&s["dead"]["frames"])
        + n(&c["evicted"])
        + n(&c["purged"])
        + n(&c["quarantined"])
        + n(&c["index_dropped"]);
    assert_eq!(
        n(&c["committed"]),
        right,
        "{when}: the counters do not add up: {s}"
    );
}
