//! A [`Report`] as HTML (inline SVG plots drawn here, no script, no external file: it opens from
//! a mail attachment or a file share) and as Markdown. The HTML is well-formed XML as well
//! (every element closed, every attribute quoted, text escaped), so tools that parse either
//! read it.

use std::fmt::Write as _;

use super::RULES_MARKDOWN;
use super::accounting::{Bucket, Period, ProbeSummary, Report};

/// The plot's size, in SVG user units (pixels at 100 %).
const PLOT_WIDTH: f64 = 720.0;
const PANEL_HEIGHT: f64 = 120.0;
const MARGIN_LEFT: f64 = 56.0;
const MARGIN_RIGHT: f64 = 12.0;
const MARGIN_TOP: f64 = 22.0;
const PANEL_GAP: f64 = 44.0;

/// `2026-12-06 14:05 UTC`.
pub(crate) fn utc(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return format!("{ms} ms");
    };
    format!(
        "{:04}-{:02}-{:02} {:02}:{:02} UTC",
        t.year(),
        u8::from(t.month()),
        t.day(),
        t.hour(),
        t.minute()
    )
}

/// `2026-12-06`.
pub(crate) fn date(ms: i64) -> String {
    let Ok(t) = time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(ms) * 1_000_000) else {
        return format!("{ms}");
    };
    format!("{:04}-{:02}-{:02}", t.year(), u8::from(t.month()), t.day())
}

/// `3h 05m`, `12m 30s`, `45s`.
pub(crate) fn duration(ms: i64) -> String {
    let s = ms.max(0) / 1000;
    let (d, h, m, sec) = (s / 86_400, (s / 3600) % 24, (s / 60) % 60, s % 60);
    if d > 0 {
        format!("{d}d {h:02}h {m:02}m")
    } else if h > 0 {
        format!("{h}h {m:02}m")
    } else if m > 0 {
        format!("{m}m {sec:02}s")
    } else {
        format!("{sec}s")
    }
}

fn pct(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |p| format!("{p:.3} %"))
}

fn ms(v: Option<f64>) -> String {
    v.map_or_else(|| "n/a".to_owned(), |m| format!("{m:.1} ms"))
}

/// Escapes text and attribute values for HTML and XML alike.
fn esc(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            // Control characters are not allowed in XML 1.0; a probe's error text might hold one.
            c if c.is_control() && c != '\n' && c != '\t' => out.push('\u{fffd}'),
            c => out.push(c),
        }
    }
    out
}

/// Escapes a Markdown table cell: a `|` would split it, a newline end the row.
fn md_cell(text: &str) -> String {
    text.replace('|', "\\|").replace(['\n', '\r'], " ")
}

fn title(report: &Report) -> String {
    format!(
        "meshkit-probe {} report, {} to {}",
        report.period.as_str(),
        utc(report.span.start_unix_ms),
        utc(report.span.end_unix_ms)
    )
}

fn probe_name(p: &ProbeSummary) -> String {
    format!("{}/{}/{}/{}", p.cluster, p.namespace, p.group, p.probe)
}

/// A table both renderers write: its cells are made once, the markup and escaping per format.
struct Table {
    /// The headers, and whether the column holds numbers (right-aligned).
    columns: Vec<(&'static str, bool)>,
    rows: Vec<Row>,
}

struct Row {
    cells: Vec<String>,
    /// Greyed out in HTML (a muted incident).
    muted: bool,
    /// In HTML the first cell links to this anchor (a probe's section).
    anchor: Option<String>,
}

impl Row {
    fn new(cells: Vec<String>) -> Self {
        Self {
            cells,
            muted: false,
            anchor: None,
        }
    }
}

impl Table {
    fn html(&self, h: &mut String) {
        h.push_str("<table>\n<thead><tr>");
        for (name, _) in &self.columns {
            let _ = write!(h, "<th>{name}</th>");
        }
        h.push_str("</tr></thead>\n<tbody>\n");
        for row in &self.rows {
            h.push_str(if row.muted {
                "<tr class=\"muted\">"
            } else {
                "<tr>"
            });
            for (i, (cell, (_, numeric))) in row.cells.iter().zip(&self.columns).enumerate() {
                h.push_str(if *numeric {
                    "<td class=\"num\">"
                } else {
                    "<td>"
                });
                match &row.anchor {
                    Some(anchor) if i == 0 => {
                        let _ = write!(h, "<a href=\"#{anchor}\">{}</a>", esc(cell));
                    }
                    _ => h.push_str(&esc(cell)),
                }
                h.push_str("</td>");
            }
            h.push_str("</tr>\n");
        }
        h.push_str("</tbody>\n</table>\n");
    }

    fn markdown(&self, m: &mut String) {
        let cells = |row: Vec<String>| format!("| {} |\n", row.join(" | "));
        m.push_str(&cells(
            self.columns.iter().map(|(n, _)| (*n).to_owned()).collect(),
        ));
        m.push_str(&cells(
            self.columns
                .iter()
                .map(|&(_, numeric)| if numeric { "---:" } else { "---" }.to_owned())
                .collect(),
        ));
        for row in &self.rows {
            m.push_str(&cells(row.cells.iter().map(|c| md_cell(c)).collect()));
        }
    }
}

/// Availability per probe: one row a probe.
fn availability(report: &Report) -> Table {
    let text = ["probe", "kind", "target"].map(|n| (n, false));
    let numbers = [
        "runs",
        "availability",
        "degraded",
        "downtime",
        "maintenance",
        "p50",
        "p99",
        "incidents",
    ]
    .map(|n| (n, true));
    let rows = report.probes.iter().enumerate().map(|(i, p)| Row {
        anchor: Some(format!("probe-{i}")),
        ..Row::new(vec![
            probe_name(p),
            p.kind.clone(),
            p.target.clone(),
            p.runs_counted.to_string(),
            pct(p.availability_percent),
            pct(p.degraded_percent),
            duration(p.downtime_ms),
            duration(p.maintenance_ms),
            ms(p.p50_ms),
            ms(p.p99_ms),
            p.incidents.to_string(),
        ])
    });
    Table {
        columns: text.into_iter().chain(numbers).collect(),
        rows: rows.collect(),
    }
}

/// The alerts that fired in the period, one row each.
fn incidents(report: &Report) -> Table {
    let columns = [
        "fired", "resolved", "lasted", "probe", "alert", "muted", "why",
    ]
    .map(|n| (n, n == "lasted"))
    .into();
    let rows = report.incidents.iter().map(|i| {
        let lasted = i
            .resolved_unix_ms
            .unwrap_or(report.span.end_unix_ms)
            .saturating_sub(i.fired_unix_ms);
        Row {
            muted: i.muted,
            ..Row::new(vec![
                utc(i.fired_unix_ms),
                i.resolved_unix_ms
                    .map_or_else(|| "still firing".to_owned(), utc),
                duration(lasted),
                format!("{}/{}/{}/{}", i.cluster, i.namespace, i.group, i.probe),
                i.alert.to_owned(),
                if i.muted { "muted (maintenance)" } else { "no" }.to_owned(),
                i.reason.clone(),
            ])
        }
    });
    Table {
        columns,
        rows: rows.collect(),
    }
}

/// One probe's buckets (hours or days): the numbers its plot draws.
fn buckets(period: Period, unit: &'static str, p: &ProbeSummary) -> Table {
    let rows = p.buckets.iter().map(|b| {
        Row::new(vec![
            bucket_label(period, b.start_unix_ms),
            b.runs.to_string(),
            pct(b.success_percent),
            ms(b.p50_ms),
            ms(b.p99_ms),
        ])
    });
    Table {
        columns: vec![
            (unit, false),
            ("runs", true),
            ("success", true),
            ("p50", true),
            ("p99", true),
        ],
        rows: rows.collect(),
    }
}

/// The HTML report.
pub(crate) fn html(report: &Report) -> String {
    let mut h = String::new();
    let title = esc(&title(report));
    // Writing to a String cannot fail: the results are ignored below.
    let _ = write!(
        h,
        "<!DOCTYPE html>\n<html lang=\"en\" xmlns=\"http://www.w3.org/1999/xhtml\">\n<head>\n\
         <meta charset=\"utf-8\" />\n<title>{title}</title>\n<style>\n\
         body {{ font-family: system-ui, sans-serif; margin: 2em; color: #222; }}\n\
         table {{ border-collapse: collapse; margin: 1em 0; }}\n\
         th, td {{ border: 1px solid #ccc; padding: 0.25em 0.6em; text-align: left; }}\n\
         th, td {{ vertical-align: top; }}\n\
         td.num {{ text-align: right; font-variant-numeric: tabular-nums; white-space: nowrap; }}\n\
         tr.muted td {{ color: #777; font-style: italic; }}\n\
         .bad {{ color: #b00020; }}\n\
         </style>\n</head>\n<body>\n<h1>{title}</h1>\n"
    );
    let _ = writeln!(
        h,
        "<p>Agents: {}. Overall availability: <strong>{}</strong>. Agent downtime (not counted \
         as up or down): {}.</p>",
        if report.agents.is_empty() {
            "none seen".to_owned()
        } else {
            esc(&report.agents.join(", "))
        },
        pct(report.availability_percent),
        duration(report.agent_downtime_ms)
    );

    h.push_str("<h2>Availability per probe</h2>\n");
    availability(report).html(&mut h);

    h.push_str("<h2>Incidents</h2>\n");
    if report.incidents.is_empty() {
        h.push_str("<p>No alert fired in this period.</p>\n");
    } else {
        incidents(report).html(&mut h);
    }

    h.push_str("<h2>Agent downtime</h2>\n");
    if report.agent_downtime.is_empty() {
        h.push_str("<p>The agent's heartbeats cover the whole period.</p>\n");
    } else {
        h.push_str("<ul>\n");
        for s in &report.agent_downtime {
            let _ = writeln!(
                h,
                "<li>{} to {} ({})</li>",
                utc(s.start_unix_ms),
                utc(s.end_unix_ms),
                duration(s.len_ms())
            );
        }
        h.push_str("</ul>\n");
    }

    let _ = writeln!(h, "<h2>Per probe, per {}</h2>", bucket_unit(report.period));
    for (i, p) in report.probes.iter().enumerate() {
        let _ = writeln!(
            h,
            "<section id=\"probe-{i}\">\n<h3>{}</h3>",
            esc(&probe_name(p))
        );
        h.push_str(&svg(report.period, p));
        h.push_str("</section>\n");
    }

    h.push_str("<h2>How this report counts</h2>\n");
    for paragraph in RULES_MARKDOWN.split("\n\n") {
        let text = paragraph.replace('\n', " ");
        if let Some(item) = text.strip_prefix("- ") {
            // The rules are one bulleted list separated by blank lines: one <ul> per item.
            let _ = writeln!(h, "<ul><li>{}</li></ul>", inline_md(item));
        } else {
            let _ = writeln!(h, "<p>{}</p>", inline_md(&text));
        }
    }
    h.push_str("</body>\n</html>\n");
    h
}

/// The rules' Markdown is plain sentences with `**bold**` and `` `code` ``: enough to render.
fn inline_md(text: &str) -> String {
    let escaped = esc(text);
    let mut out = String::new();
    let (mut bold, mut code) = (false, false);
    let mut rest = escaped.as_str();
    while let Some(c) = rest.chars().next() {
        if rest.starts_with("**") && !code {
            out.push_str(if bold { "</strong>" } else { "<strong>" });
            bold = !bold;
            rest = &rest[2..];
        } else if c == '`' {
            out.push_str(if code { "</code>" } else { "<code>" });
            code = !code;
            rest = &rest[1..];
        } else {
            out.push(c);
            rest = &rest[c.len_utf8()..];
        }
    }
    if code {
        out.push_str("</code>");
    }
    if bold {
        out.push_str("</strong>");
    }
    out
}

/// One probe's plot: success rate on top, latency p50 and p99 below, one point per bucket;
/// a bucket without runs leaves a gap in the lines.
fn svg(period: Period, p: &ProbeSummary) -> String {
    let n = p.buckets.len().max(1);
    let inner_w = PLOT_WIDTH - MARGIN_LEFT - MARGIN_RIGHT;
    let height = MARGIN_TOP + PANEL_HEIGHT + PANEL_GAP + PANEL_HEIGHT + 30.0;
    let step = inner_w / n as f64;
    let x = |i: usize| MARGIN_LEFT + step * (i as f64 + 0.5);
    let top1 = MARGIN_TOP;
    let top2 = MARGIN_TOP + PANEL_HEIGHT + PANEL_GAP;
    let max_latency = p
        .buckets
        .iter()
        .filter_map(|b| b.p99_ms)
        .fold(0.0_f64, f64::max);
    let latency_top = nice_ceiling(max_latency);
    let mut s = String::new();
    let _ = writeln!(
        s,
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{PLOT_WIDTH}\" height=\"{height}\" \
         viewBox=\"0 0 {PLOT_WIDTH} {height}\" role=\"img\" font-size=\"11\" \
         font-family=\"sans-serif\">\n<title>{}: success rate and latency p50/p99 per {}</title>",
        esc(&probe_name(p)),
        if period == Period::Daily {
            "hour"
        } else {
            "day"
        }
    );
    // Panels, grid and labels.
    for (top, label, max, unit) in [
        (top1, "success rate", 100.0, "%"),
        (top2, "latency p50 / p99", latency_top, "ms"),
    ] {
        let _ = writeln!(
            s,
            "<text x=\"{MARGIN_LEFT}\" y=\"{}\" font-weight=\"bold\">{label}</text>",
            top - 8.0
        );
        for k in 0..=4 {
            let y = top + PANEL_HEIGHT - PANEL_HEIGHT * f64::from(k) / 4.0;
            let value = max * f64::from(k) / 4.0;
            let _ = writeln!(
                s,
                "<line x1=\"{MARGIN_LEFT}\" y1=\"{y:.1}\" x2=\"{:.1}\" y2=\"{y:.1}\" stroke=\"#ddd\" />\
                 <text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\">{}{unit}</text>",
                PLOT_WIDTH - MARGIN_RIGHT,
                MARGIN_LEFT - 4.0,
                y + 4.0,
                trim_number(value)
            );
        }
    }
    // Bucket labels under the lower panel: every third hour, or every day.
    let every = if period == Period::Daily { 3 } else { 1 };
    for (i, b) in p.buckets.iter().enumerate() {
        if i % every == 0 {
            let label = bucket_label(period, b.start_unix_ms);
            let _ = writeln!(
                s,
                "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"middle\">{label}</text>",
                x(i),
                top2 + PANEL_HEIGHT + 16.0
            );
        }
    }
    let y_of = |top: f64, max: f64, v: f64| top + PANEL_HEIGHT - PANEL_HEIGHT * (v / max).min(1.0);
    type Series = fn(&Bucket) -> Option<f64>;
    let series: [(&str, f64, f64, Series); 3] = [
        ("#1b7f3b", top1, 100.0, |b| b.success_percent),
        ("#1f5fbf", top2, latency_top, |b| b.p50_ms),
        ("#c05600", top2, latency_top, |b| b.p99_ms),
    ];
    for (color, top, max, value) in &series {
        let mut segment = Vec::new();
        let flush = |segment: &mut Vec<(f64, f64)>, s: &mut String| {
            if segment.len() > 1 {
                let points: Vec<String> = segment
                    .iter()
                    .map(|(x, y)| format!("{x:.1},{y:.1}"))
                    .collect();
                let _ = writeln!(
                    s,
                    "<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"2\" points=\"{}\" />",
                    points.join(" ")
                );
            }
            segment.clear();
        };
        for i in 0..p.buckets.len() {
            match value(&p.buckets[i]) {
                Some(v) => {
                    let point = (x(i), y_of(*top, *max, v));
                    let _ = writeln!(
                        s,
                        "<circle cx=\"{:.1}\" cy=\"{:.1}\" r=\"2.5\" fill=\"{color}\"><title>{}: {}</title></circle>",
                        point.0,
                        point.1,
                        bucket_label(period, p.buckets[i].start_unix_ms),
                        trim_number(v)
                    );
                    segment.push(point);
                }
                None => flush(&mut segment, &mut s),
            }
        }
        flush(&mut segment, &mut s);
    }
    // Legend of the latency panel.
    let _ = writeln!(
        s,
        "<text x=\"{:.1}\" y=\"{:.1}\" text-anchor=\"end\"><tspan fill=\"#1f5fbf\">p50</tspan> / \
         <tspan fill=\"#c05600\">p99</tspan></text>",
        PLOT_WIDTH - MARGIN_RIGHT,
        top2 - 8.0
    );
    s.push_str("</svg>\n");
    s
}

/// What one bucket of a period's plots and tables spans.
fn bucket_unit(period: Period) -> &'static str {
    match period {
        Period::Daily => "hour",
        Period::Weekly => "day",
    }
}

fn bucket_label(period: Period, start_ms: i64) -> String {
    let stamp = utc(start_ms);
    match period {
        // "2026-12-06 14:00 UTC" -> "14:00"
        Period::Daily => stamp.get(11..16).unwrap_or(&stamp).to_owned(),
        // -> "12-06"
        Period::Weekly => stamp.get(5..10).unwrap_or(&stamp).to_owned(),
    }
}

/// The smallest of 1, 2, 5 x 10^k at or above `v` (at least 1): a readable axis top.
fn nice_ceiling(v: f64) -> f64 {
    if !v.is_finite() || v <= 1.0 {
        return 1.0;
    }
    let mut base = 1.0_f64;
    // Bounded: 10^15 ms is past any latency.
    for _ in 0..15 {
        for m in [1.0, 2.0, 5.0] {
            if base * m >= v {
                return base * m;
            }
        }
        base *= 10.0;
    }
    base
}

fn trim_number(v: f64) -> String {
    // Up to two decimals, trailing zeros dropped: 100, 2.5, 1.25.
    let text = format!("{v:.2}");
    text.trim_end_matches('0').trim_end_matches('.').to_owned()
}

/// The Markdown twin: the same tables, the plots as per-bucket tables.
pub(crate) fn markdown(report: &Report) -> String {
    let mut m = String::new();
    let _ = writeln!(m, "# {}\n", title(report));
    let _ = writeln!(
        m,
        "Agents: {}. Overall availability: **{}**. Agent downtime (not counted as up or down): {}.\n",
        if report.agents.is_empty() {
            "none seen".to_owned()
        } else {
            report.agents.join(", ")
        },
        pct(report.availability_percent),
        duration(report.agent_downtime_ms)
    );
    m.push_str("## Availability per probe\n\n");
    availability(report).markdown(&mut m);
    m.push_str("\n## Incidents\n\n");
    if report.incidents.is_empty() {
        m.push_str("No alert fired in this period.\n");
    } else {
        incidents(report).markdown(&mut m);
    }
    m.push_str("\n## Agent downtime\n\n");
    if report.agent_downtime.is_empty() {
        m.push_str("The agent's heartbeats cover the whole period.\n");
    } else {
        for s in &report.agent_downtime {
            let _ = writeln!(
                m,
                "- {} to {} ({})",
                utc(s.start_unix_ms),
                utc(s.end_unix_ms),
                duration(s.len_ms())
            );
        }
    }
    let unit = bucket_unit(report.period);
    let _ = writeln!(m, "\n## Per probe, per {unit}\n");
    for p in &report.probes {
        let _ = writeln!(m, "### {}\n", md_cell(&probe_name(p)));
        buckets(report.period, unit, p).markdown(&mut m);
        m.push('\n');
    }
    m.push_str("## How this report counts\n\n");
    m.push_str(RULES_MARKDOWN);
    m.push('\n');
    m
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn helpers() {
        assert_eq!(utc(0), "1970-01-01 00:00 UTC");
        assert_eq!(date(86_400_000), "1970-01-02");
        assert_eq!(duration(3_725_000), "1h 02m");
        assert_eq!(duration(45_000), "45s");
        assert_eq!(
            esc("<a href=\"x\">&'\u{1}"),
            "&lt;a href=&quot;x&quot;&gt;&amp;&#39;\u{fffd}"
        );
        assert_eq!(nice_ceiling(0.0), 1.0);
        assert_eq!(nice_ceiling(3.2), 5.0);
        assert_eq!(nice_ceiling(120.0), 200.0);
        assert_eq!(nice_ceiling(1000.0), 1000.0);
        assert_eq!(
            inline_md("**down**: `fail`"),
            "<strong>down</strong>: <code>fail</code>"
        );
        assert_eq!(md_cell("a|b\nc"), "a\\|b c");
        assert_eq!(
            [
                trim_number(100.0),
                trim_number(2.5),
                trim_number(1.25),
                trim_number(0.0)
            ],
            ["100", "2.5", "1.25", "0"]
        );
    }
}
