//! Pictures and rows of history: the chart of changes over time on the Sync
//! history page (inline SVG drawn by `templates/chart.html`, colours from the
//! stylesheet, no script), and what one audit row of a user changed.

use mfasync_store::{AuditEntry, SyncRun};

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

/// One coloured part of a bar (numbers as SVG attributes, to a tenth).
pub(crate) struct Rect {
    pub(crate) class: &'static str,
    pub(crate) x: String,
    pub(crate) y: String,
    pub(crate) width: String,
    pub(crate) height: String,
}

/// One run's bar: its id, the hover title, the parts bottom to top.
pub(crate) struct Bar {
    pub(crate) id: i64,
    pub(crate) title: String,
    pub(crate) rects: Vec<Rect>,
}

/// The chart of changes over time (`templates/chart.html`): no bars when no
/// run has happened.
pub(crate) struct Chart {
    pub(crate) bars: Vec<Bar>,
    pub(crate) max: i64,
    pub(crate) width: f64,
    pub(crate) height: f64,
    pub(crate) legend: Vec<(&'static str, &'static str)>,
}

/// A stacked bar per run (oldest on the left) of the users created, updated,
/// enabled, disabled and removed; a failed run is a grey stub. `runs` is
/// newest first, as the store gives it.
pub(crate) fn changes(runs: &[SyncRun]) -> Chart {
    let max = runs
        .iter()
        .map(|r| counts(r).iter().map(|n| (*n).max(0)).sum::<i64>())
        .max()
        .unwrap_or(0)
        .max(1);
    let n = runs.len().max(1) as f64;
    let slot = WIDTH / n;
    let bar = (slot * 0.8).max(1.0);
    let tenth = |v: f64| format!("{v:.1}");
    let mut bars = Vec::new();
    for (i, r) in runs.iter().rev().enumerate() {
        let x = i as f64 * slot + (slot - bar) / 2.0;
        let mut y = HEIGHT;
        let title = format!(
            "#{} {} {}: {} created, {} updated, {} enabled, {} disabled, {} removed{}",
            r.id,
            r.mode,
            crate::kit::When::of(&r.started_at).text,
            r.created,
            r.updated,
            r.enabled,
            r.disabled,
            r.removed,
            r.error.as_ref().map(|_| " (failed)").unwrap_or("")
        );
        let mut rects = Vec::new();
        if r.error.is_some() {
            rects.push(Rect {
                class: "c-failed",
                x: tenth(x),
                y: tenth(HEIGHT - 4.0),
                width: tenth(bar),
                height: "4".into(),
            });
        }
        for ((_, class), count) in SERIES.iter().zip(counts(r)) {
            if count <= 0 {
                continue;
            }
            let h = count as f64 / max as f64 * HEIGHT;
            y -= h;
            rects.push(Rect {
                class,
                x: tenth(x),
                y: tenth(y),
                width: tenth(bar),
                height: tenth(h),
            });
        }
        bars.push(Bar {
            id: r.id,
            title,
            rects,
        });
    }
    Chart {
        bars,
        max,
        width: WIDTH,
        height: HEIGHT,
        legend: SERIES
            .iter()
            .copied()
            .chain([("failed", "c-failed")])
            .collect(),
    }
}

/// The chart alone, as the history page includes it.
#[derive(askama::Template)]
#[template(path = "chart.html")]
pub(crate) struct ChartBlock<'a> {
    pub(crate) chart: &'a Chart,
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
        use askama::Template;
        let chart = changes(&[
            run(3, 0, 0, Some("down")),
            run(2, 10, 0, None),
            run(1, 5, 5, None),
        ]);
        let svg = ChartBlock { chart: &chart }.render().unwrap();
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
        let empty = changes(&[]);
        let html = ChartBlock { chart: &empty }.render().unwrap();
        assert!(html.contains("No synchronization has run yet"));
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
        assert_eq!(changed_fields(&e), vec!["email", "pager"]);
    }
}
