//! The two Prometheus exposition formats the agent's and the webhook's
//! `/metrics` speak: OpenMetrics (what prometheus-client writes and
//! Prometheus asks for) and the classic 0.0.4 text (curl, `promtool check
//! metrics`, older scrapers). Shared by both servers, so they negotiate and
//! convert the same way.

use std::collections::HashSet;

/// What Prometheus asks for and gets from `/metrics`.
pub const OPENMETRICS_CONTENT_TYPE: &str =
    "application/openmetrics-text; version=1.0.0; charset=utf-8";
/// For clients that do not ask for OpenMetrics (curl, `promtool check
/// metrics`, older scrapers).
pub const PROMETHEUS_TEXT_CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// prometheus-client writes only OpenMetrics. The 0.0.4 text format differs
/// for what we export in three ways: a counter's HELP and TYPE name the
/// sample name (`x_total`, not `x`), and there are no `# UNIT` or `# EOF`
/// lines.
pub fn openmetrics_to_prometheus_text(openmetrics: &str) -> String {
    let counters: HashSet<&str> = openmetrics
        .lines()
        .filter_map(|line| line.strip_prefix("# TYPE "))
        .filter_map(|rest| rest.strip_suffix(" counter"))
        .collect();
    let mut text = String::with_capacity(openmetrics.len());
    for line in openmetrics.lines() {
        if line == "# EOF" || line.starts_with("# UNIT ") {
            continue;
        }
        let renamed = ["# HELP ", "# TYPE "].iter().find_map(|prefix| {
            let rest = line.strip_prefix(prefix)?;
            let (name, tail) = rest.split_once(' ')?;
            counters
                .contains(name)
                .then(|| format!("{prefix}{name}_total {tail}"))
        });
        text.push_str(renamed.as_deref().unwrap_or(line));
        text.push('\n');
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prometheus_text_names_counters_by_their_samples() {
        let openmetrics = "# HELP x_attempts Events.\n# TYPE x_attempts counter\nx_attempts_total{a=\"1\"} 2\n\
            # HELP x_last Last.\n# TYPE x_last gauge\n# UNIT x_last seconds\nx_last 1.5\n# EOF\n";
        assert_eq!(
            openmetrics_to_prometheus_text(openmetrics),
            "# HELP x_attempts_total Events.\n# TYPE x_attempts_total counter\nx_attempts_total{a=\"1\"} 2\n\
            # HELP x_last Last.\n# TYPE x_last gauge\nx_last 1.5\n"
        );
    }
}
