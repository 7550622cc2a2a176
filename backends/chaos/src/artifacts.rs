//! The run's folder: files written as the run goes, and `report.html` (the report's figures,
//! the expectations' verdicts, the faults applied, the alerts that fired and an inline SVG plot
//! of the members held alive over time with the faults and detections marked).

use std::fmt::Write as _;
use std::path::Path;

use serde_json::Value;

use crate::compose::RunError;

fn io(path: &Path) -> impl FnOnce(std::io::Error) -> RunError + '_ {
    move |source| RunError::Io {
        path: path.to_owned(),
        source,
    }
}

/// Writes `bytes` to `path`, creating its folder.
///
/// # Errors
///
/// [`RunError::Io`].
pub fn write_bytes(path: &Path, bytes: &[u8]) -> Result<(), RunError> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir).map_err(io(dir))?;
    }
    std::fs::write(path, bytes).map_err(io(path))
}

/// Writes `value` to `path` as pretty JSON.
///
/// # Errors
///
/// [`RunError::Io`].
pub fn write_json(path: &Path, value: &Value) -> Result<(), RunError> {
    let text =
        serde_json::to_string_pretty(value).unwrap_or_else(|e| format!("{{\"error\":\"{e}\"}}"));
    write_bytes(path, text.as_bytes())
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// The members-alive plot: the fewest and most members a running node held alive, the
/// running containers, a vertical line at each fault and a dot at each detection.
pub fn svg_plot(report: &Value) -> String {
    let (w, h, left, bottom, top, right) = (760.0, 280.0, 50.0, 30.0, 20.0, 20.0);
    let points = report["alive"].as_array().cloned().unwrap_or_default();
    let length = report["wall_s"].as_f64().unwrap_or(0.0).max(1.0);
    let ymax = points
        .iter()
        .filter_map(|p| Some(p["max"].as_f64()?.max(p["running"].as_f64()?)))
        .fold(1.0_f64, f64::max)
        .ceil();
    let x = |t: f64| left + (t / length) * (w - left - right);
    let y = |v: f64| h - bottom - (v / ymax) * (h - bottom - top);
    let mut svg = format!(
        "<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{w}\" height=\"{h}\" \
         font-family=\"sans-serif\" font-size=\"11\">\n"
    );
    let _ = writeln!(
        svg,
        "<line x1=\"{left}\" y1=\"{b}\" x2=\"{r}\" y2=\"{b}\" stroke=\"#444\"/>\
         <line x1=\"{left}\" y1=\"{top}\" x2=\"{left}\" y2=\"{b}\" stroke=\"#444\"/>",
        b = h - bottom,
        r = w - right
    );
    for i in 0..=ymax as u32 {
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"end\">{i}</text>",
            left - 6.0,
            y(f64::from(i)) + 4.0
        );
    }
    let ticks = 6;
    for i in 0..=ticks {
        let t = length * f64::from(i) / f64::from(ticks);
        let _ = writeln!(
            svg,
            "<text x=\"{}\" y=\"{}\" text-anchor=\"middle\">{t:.0} s</text>",
            x(t),
            h - 10.0
        );
    }
    for f in report["faults"].as_array().into_iter().flatten() {
        let t = f["t"].as_f64().unwrap_or(0.0);
        let name = f["action"].as_str().unwrap_or("");
        let _ = writeln!(
            svg,
            "<line x1=\"{0}\" y1=\"{top}\" x2=\"{0}\" y2=\"{1}\" stroke=\"#c33\" \
             stroke-dasharray=\"4 3\"/><text x=\"{2}\" y=\"{3}\" fill=\"#c33\">{4}</text>",
            x(t),
            h - bottom,
            x(t) + 3.0,
            top + 10.0,
            esc(name)
        );
    }
    for (key, colour) in [("running", "#999"), ("max", "#27a"), ("min", "#2a5")] {
        let path: Vec<String> = points
            .iter()
            .filter_map(|p| {
                Some(format!(
                    "{:.1},{:.1}",
                    x(p["t"].as_f64()?),
                    y(p[key].as_f64()?)
                ))
            })
            .collect();
        let _ = writeln!(
            svg,
            "<polyline fill=\"none\" stroke=\"{colour}\" stroke-width=\"2\" points=\"{}\"/>",
            path.join(" ")
        );
    }
    let kills: Vec<f64> = report["faults"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|f| f["action"] == "kill")
        .filter_map(|f| f["t"].as_f64())
        .collect();
    for (i, d) in report["detections_s"]
        .as_array()
        .into_iter()
        .flatten()
        .enumerate()
    {
        if let (Some(d), Some(k)) = (d.as_f64(), kills.get(i)) {
            let _ = writeln!(
                svg,
                "<circle cx=\"{}\" cy=\"{}\" r=\"4\" fill=\"#e80\"/><text x=\"{}\" y=\"{}\" \
                 fill=\"#e80\">detected {d:.1} s</text>",
                x(k + d),
                y(0.0) - 8.0,
                x(k + d) + 6.0,
                y(0.0) - 12.0
            );
        }
    }
    let _ = writeln!(
        svg,
        "<text x=\"{}\" y=\"12\" fill=\"#2a5\">fewest held alive</text>\
         <text x=\"{}\" y=\"12\" fill=\"#27a\">most held alive</text>\
         <text x=\"{}\" y=\"12\" fill=\"#999\">containers running</text>",
        left,
        left + 120.0,
        left + 230.0
    );
    svg.push_str("</svg>\n");
    svg
}

/// The report as one HTML page with no outside resource.
pub fn html(report: &Value) -> String {
    let mut out = String::from(
        "<!doctype html><html><head><meta charset=\"utf-8\"><title>meshkit-chaos report</title>\
         <style>body{font-family:sans-serif;margin:2em;max-width:60em}table{border-collapse:\
         collapse}td,th{border:1px solid #ccc;padding:2px 8px;text-align:left}.fail{color:#c33}\
         .pass{color:#2a5}</style></head><body>\n",
    );
    let passed = report["passed"].as_bool().unwrap_or(false);
    let _ = writeln!(
        out,
        "<h1>{} <span class=\"{}\">{}</span></h1><p>env {}, project {}, seed {}, {} nodes, {:.1} s; replay: <code>{}</code></p>",
        esc(report["scenario"].as_str().unwrap_or("")),
        if passed { "pass" } else { "fail" },
        if passed { "passed" } else { "FAILED" },
        esc(report["env"].as_str().unwrap_or("sim")),
        esc(report["project"].as_str().unwrap_or("-")),
        report["seed"],
        report["nodes"],
        report["wall_s"].as_f64().unwrap_or(0.0),
        esc(report["replay"].as_str().unwrap_or(""))
    );
    out.push_str("<h2>Members held alive</h2>\n");
    out.push_str(&svg_plot(report));
    out.push_str("<h2>Figures</h2><table>\n");
    for key in [
        "detection_p50_s",
        "detection_p99_s",
        "detections_s",
        "crashes",
        "undetected",
        "false_positives",
        "pauses",
        "paused_dead",
        "partitions",
        "heal_s",
        "converged",
        "failover_p50_s",
        "failover_p99_s",
        "raft_failover_p50_s",
        "raft_failover_p99_s",
    ] {
        let _ = writeln!(
            out,
            "<tr><th>{key}</th><td>{}</td></tr>",
            esc(&report[key].to_string())
        );
    }
    out.push_str("</table>\n<h2>Expectations</h2><ul>\n");
    for f in report["expectations_failed"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "<li class=\"fail\">{}</li>",
            esc(f.as_str().unwrap_or(""))
        );
    }
    for k in report["expectations_not_evaluated"]
        .as_array()
        .into_iter()
        .flatten()
    {
        let _ = writeln!(
            out,
            "<li>not evaluated here: {}</li>",
            esc(k.as_str().unwrap_or(""))
        );
    }
    out.push_str("</ul>\n<h2>Faults</h2><table><tr><th>t (s)</th><th>fault</th><th>action</th><th>nodes</th><th>until</th><th>experiment / error</th></tr>\n");
    for f in report["faults"].as_array().into_iter().flatten() {
        let _ = writeln!(
            out,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
            f["t"],
            f["fault"]
                .as_u64()
                .map_or("-".to_owned(), |n| format!("#{}", n + 1)),
            esc(f["action"].as_str().unwrap_or("")),
            esc(&f["nodes"].to_string()),
            f["until"]
                .as_f64()
                .map_or("-".to_owned(), |u| format!("{u:.1}")),
            esc(f["error"]
                .as_str()
                .or_else(|| f["experiment"].as_str())
                .unwrap_or(""))
        );
    }
    out.push_str("</table>\n<h2>Alerts that fired</h2><ul>\n");
    for a in report["alerts_fired"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "<li>{}</li>", esc(a.as_str().unwrap_or("")));
    }
    out.push_str("</ul>\n<h2>Notes</h2><ul>\n");
    for n in report["notes"].as_array().into_iter().flatten() {
        let _ = writeln!(out, "<li>{}</li>", esc(n.as_str().unwrap_or("")));
    }
    out.push_str("</ul>\n<p>Files beside this one: report.json, logs/, topology/, prometheus/, alerts.json.</p></body></html>\n");
    out
}

/// Writes [`html`] to `path`.
///
/// # Errors
///
/// [`RunError::Io`].
pub fn write_html(path: &Path, report: &Value) -> Result<(), RunError> {
    write_bytes(path, html(report).as_bytes())
}
