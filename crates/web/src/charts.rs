//! Server-rendered pictures and tables of history: the chart of changes over
//! time on the Sync history page (inline SVG, colours from the stylesheet, no
//! script), and one user's audit rows on the user's page.

use std::fmt::Write as _;

use mfasync_store::{AuditEntry, SyncRun};

use crate::html::esc;

/// The change kinds drawn, bottom to top, with their CSS class.
const SERIES: &[(&str, &str)] = &[
    ("created", "c-created"),
    ("updated", "c-updated"),
    ("enabled", "c-enabled"),
    ("disabled", "c-disabled"),
    ("removed", "c-removed"),
];

const WIDTH: f64 = 800.0;
const HEIGHT: f64 = 180.0;

fn counts(r: &SyncRun) -> [i64; 5] {
    [r.created, r.updated, r.enabled, r.disabled, r.removed]
}

/// A stacked bar per run (oldest on the left) of the users created, updated,
/// enabled, disabled and removed; a failed run is a grey stub. `runs` is
/// newest first, as the store gives it.
pub(crate) fn changes_svg(runs: &[SyncRun]) -> String {
    if runs.is_empty() {
        return r#"<p id="chart-empty">No synchronization has run yet.</p>"#.to_string();
    }
    let max = runs
        .iter()
        .map(|r| counts(r).iter().map(|n| (*n).max(0)).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = runs.len() as f64;
    let slot = WIDTH / n;
    let bar = (slot * 0.8).max(1.0);
    let mut svg = format!(
        r#"<svg id="changes-chart" class="chart" viewBox="0 0 {w} {h}" width="{w}" height="{h}" role="img" aria-label="Changes per synchronization, oldest to newest (most: {max})">"#,
        w = WIDTH,
        h = HEIGHT + 20.0,
    );
    for (i, r) in runs.iter().rev().enumerate() {
        let x = i as f64 * slot + (slot - bar) / 2.0;
        let mut y = HEIGHT;
        let title = format!(
            "#{} {} {}: {} created, {} updated, {} enabled, {} disabled, {} removed{}",
            r.id,
            r.mode,
            r.started_at,
            r.created,
            r.updated,
            r.enabled,
            r.disabled,
            r.removed,
            r.error.as_ref().map(|_| " (failed)").unwrap_or("")
        );
        let _ = write!(
            svg,
            r#"<g class="run" data-run="{}"><title>{}</title>"#,
            r.id,
            esc(&title)
        );
        if r.error.is_some() {
            let _ = write!(
                svg,
                r#"<rect class="c-failed" x="{x:.1}" y="{:.1}" width="{bar:.1}" height="4"/>"#,
                HEIGHT - 4.0
            );
        }
        for ((_, class), count) in SERIES.iter().zip(counts(r)) {
            if count <= 0 {
                continue;
            }
            let h = count as f64 / max as f64 * HEIGHT;
            y -= h;
            let _ = write!(
                svg,
                r#"<rect class="{class}" x="{x:.1}" y="{y:.1}" width="{bar:.1}" height="{h:.1}"/>"#
            );
        }
        svg.push_str("</g>");
    }
    let _ = write!(
        svg,
        r#"<line class="axis" x1="0" y1="{h}" x2="{w}" y2="{h}"/><text x="0" y="{t}" class="label">oldest</text><text x="{w}" y="{t}" class="label end">newest · tallest bar {max} users</text></svg>"#,
        h = HEIGHT,
        w = WIDTH,
        t = HEIGHT + 16.0,
    );
    let mut legend = String::from(r#"<p class="legend">"#);
    for (name, class) in SERIES.iter().chain([("failed", "c-failed")].iter()) {
        let _ = write!(
            legend,
            r#"<svg width="10" height="10"><rect class="{class}" width="10" height="10"/></svg> {name} "#
        );
    }
    legend.push_str("</p>");
    format!("{svg}{legend}")
}

/// The most audit rows shown as one user's history (the newest).
pub(crate) const USER_HISTORY_ROWS: i64 = 1_000;

/// The fields that differ between two user documents (audit before/after);
/// none for a create or a remove.
pub(crate) fn changed_fields(e: &AuditEntry) -> Vec<String> {
    let (Some(before), Some(after)) = (e.before.as_ref(), e.after.as_ref()) else {
        return Vec::new();
    };
    let empty = serde_json::Map::new();
    let b = before.as_object().unwrap_or(&empty);
    let a = after.as_object().unwrap_or(&empty);
    let mut keys: Vec<&String> = b.keys().chain(a.keys()).collect();
    keys.sort();
    keys.dedup();
    keys.into_iter()
        .filter(|k| b.get(*k) != a.get(*k))
        .cloned()
        .collect()
}

/// One audit row of a user's history as the API answers it.
pub(crate) fn history_json(e: &AuditEntry) -> serde_json::Value {
    serde_json::json!({
        "at": e.at,
        "action": e.action,
        "actor": e.actor,
        "fields": changed_fields(e),
        "detail": e.detail,
    })
}

/// One user's audit rows (newest first) as a table.
pub(crate) fn user_history_html(entries: &[&AuditEntry]) -> String {
    if entries.is_empty() {
        return r#"<p id="user-history-empty">No synchronization has changed this user yet.</p>"#
            .to_string();
    }
    let mut rows = String::new();
    for e in entries {
        let fields = changed_fields(e)
            .iter()
            .map(|f| esc(f))
            .collect::<Vec<_>>()
            .join(", ");
        let _ = write!(
            rows,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            esc(&e.at),
            esc(&e.action),
            esc(&e.actor),
            fields,
            esc(e.detail.as_deref().unwrap_or(""))
        );
    }
    format!(
        r#"<table id="user-history"><tr><th>When</th><th>Change</th><th>By</th><th>Fields</th><th>Why</th></tr>{rows}</table>"#
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    fn run(id: i64, created: i64, removed: i64, error: Option<&str>) -> SyncRun {
        SyncRun {
            id,
            started_at: format!("2026-01-0{id}T00:00:00Z"),
            finished_at: Some("x".into()),
            mode: "full".into(),
            created,
            updated: 0,
            enabled: 0,
            disabled: 0,
            removed,
            unchanged: 0,
            error: error.map(str::to_string),
            entries_read: None,
            interrupted: false,
            note: None,
        }
    }

    #[test]
    fn bars_are_stacked_and_scaled_to_the_tallest() {
        // newest first
        let svg = changes_svg(&[
            run(3, 0, 0, Some("down")),
            run(2, 10, 0, None),
            run(1, 5, 5, None),
        ]);
        // oldest first on the left: run 1 (5 created + 5 removed), run 2 (10 created)
        let first = svg.find(r#"data-run="1""#).unwrap_or(usize::MAX);
        let second = svg.find(r#"data-run="2""#).unwrap_or(0);
        assert!(first < second, "{svg}");
        assert!(
            svg.contains(r#"class="c-created" x="26.7" y="90.0" width="213.3" height="90.0""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="c-removed" x="26.7" y="0.0" width="213.3" height="90.0""#),
            "{svg}"
        );
        assert!(
            svg.contains(r#"class="c-created" x="293.3" y="0.0" width="213.3" height="180.0""#),
            "{svg}"
        );
        assert!(svg.contains(r#"class="c-failed""#));
        assert!(svg.contains("tallest bar 10 users"));
        assert!(changes_svg(&[]).contains("No synchronization has run yet"));
    }

    #[test]
    fn user_history_lists_changed_fields() {
        let e = AuditEntry {
            id: 1,
            at: "2026-01-01T00:00:00Z".into(),
            actor: "sync".into(),
            action: "update".into(),
            username: Some("bob".into()),
            directory_id: None,
            before: Some(serde_json::json!({"email": "a@x", "enabled": true, "pager": null})),
            after: Some(serde_json::json!({"email": "b@x", "enabled": true, "pager": "1"})),
            detail: Some("<changed>".into()),
        };
        let html = user_history_html(&[&e]);
        assert!(html.contains("<td>email, pager</td>"), "{html}");
        assert!(html.contains("&lt;changed&gt;"));
    }
}
