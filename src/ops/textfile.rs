//! `[daemon] metrics_textfile`: the metrics for node_exporter's textfile collector, for
//! sites Prometheus cannot scrape. The collector reads the Prometheus text format 0.0.4,
//! not OpenMetrics, so the exposition of `metrics.rs` is rewritten into it (counter
//! families renamed to their `_total` samples, `# UNIT` and `# EOF` dropped) and written
//! through a temporary file renamed over the target. The status task calls
//! [`write_textfile`] every 30 s.

use std::fmt;

use super::snapshot::Snapshot;

/// The metrics in the Prometheus text format 0.0.4 that node_exporter's textfile collector
/// reads: OpenMetrics' counter families (`# TYPE x counter` over `x_total` samples) are
/// renamed to their samples' name, and `# UNIT` and `# EOF` lines dropped.
pub fn text_004(s: &Snapshot) -> Result<String, fmt::Error> {
    let open = super::metrics::exposition(s)?;
    let mut counters = std::collections::HashSet::new();
    for line in open.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ")
            && let Some(name) = rest.strip_suffix(" counter")
        {
            counters.insert(name.to_string());
        }
    }
    let mut out = String::with_capacity(open.len());
    for line in open.lines() {
        if line.starts_with("# EOF") || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# TYPE ", "# HELP "].iter().find_map(|p| {
            let rest = line.strip_prefix(p)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{p}{name}_total {tail}"))
        });
        out.push_str(renamed.as_deref().unwrap_or(line));
        out.push('\n');
    }
    Ok(out)
}

/// Writes [`text_004`] to `path` through a temporary file renamed over it (the collector
/// never reads half a file).
pub fn write_textfile(path: &std::path::Path, s: &Snapshot) -> std::io::Result<()> {
    let text = text_004(s).map_err(|_| std::io::Error::other("cannot encode the metrics"))?;
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    std::fs::write(&tmp, text)?;
    std::fs::rename(&tmp, path)
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "test code")]
    use super::*;

    fn sample() -> Snapshot {
        let mut s = Snapshot {
            device: "pi-007".into(),
            ..Snapshot::default()
        };
        s.uploader.session_rate = Some(0.31);
        s.uploader.rate_limited = 4;
        s.uploader.budget_left_bytes = Some(1);
        s.cameras.push(crate::ops::snapshot::CameraSnapshot {
            name: "cam0".into(),
            ..Default::default()
        });
        s
    }

    /// The sample names of an exposition (the text before `{` or ` ` of each sample).
    fn names(text: &str) -> std::collections::BTreeSet<String> {
        text.lines()
            .filter(|l| !l.starts_with('#') && !l.is_empty())
            .map(|l| l.split(['{', ' ']).next().unwrap().to_string())
            .collect()
    }

    #[test]
    fn the_textfile_is_prometheus_text_whose_type_lines_name_their_samples() {
        let text = text_004(&sample()).unwrap();
        assert!(
            !text.contains("# EOF") && !text.contains("# UNIT"),
            "{text}"
        );
        assert!(text.contains("# TYPE edgecap_queue_committed_total counter\n"));
        assert!(
            text.contains("\nedgecap_queue_committed_total 0\n"),
            "{text}"
        );
        assert!(
            text.contains("edgecap_uploader_rate_limited_total 4\n"),
            "{text}"
        );
        assert!(
            text.contains("edgecap_device_info{device=\"pi-007\"} 1\n"),
            "{text}"
        );
        // Every TYPE line names a family whose samples follow it.
        let samples = names(&text);
        for line in text.lines() {
            if let Some(rest) = line.strip_prefix("# TYPE ") {
                let name = rest.split(' ').next().unwrap();
                assert!(samples.contains(name), "no sample of {name}");
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("edgecap.prom");
        write_textfile(&path, &sample()).unwrap();
        assert_eq!(std::fs::read_to_string(&path).unwrap(), text);
        assert_eq!(
            std::fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temporary left"
        );
    }

    /// The fleet dashboard (`contrib/grafana/`) asks only for series edgecap exports.
    #[test]
    fn the_grafana_dashboard_uses_only_exported_metric_names() {
        let dash = include_str!("../../contrib/grafana/edgecap-fleet.json");
        let _: serde_json::Value = serde_json::from_str(dash).unwrap();
        let exported = names(&text_004(&sample()).unwrap());
        let mut used = 0;
        for (i, _) in dash.match_indices("edgecap_") {
            let name: String = dash[i..]
                .chars()
                .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
                .collect();
            assert!(
                exported.contains(&name),
                "the dashboard uses {name}, which /metrics does not export"
            );
            used += 1;
        }
        assert!(used >= 15, "only {used} metric references");
    }
}
