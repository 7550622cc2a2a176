//! The observability pack (`dashboards/`) checked against the metric catalogue, with no outside
//! tool: every metric a rule or a panel names exists in [`catalogue::ALL`] with the labels the
//! expression filters and groups on (so a rename breaks this test, not a dashboard in
//! production); every alert has a severity, a summary, a description and a runbook section, and
//! a promtool case where it fires and one where it stays quiet; every dashboard has a stable,
//! unique uid, the `${datasource}` variable on every panel and query, the `cluster`, `namespace`
//! and `instance` variables chained in that order and filtering every node series,
//! `$__rate_interval` in every range, a title, a description and a unit on every panel (the rules of Grafana's
//! dashboard-linter that matter here), and legends that name only labels their series carry.
//!
//! PromQL is read by the small scanner below, not by a full parser: the checks need only the
//! selectors (metric name and label matchers), the grouping labels (`by`, `without`, `on`,
//! `ignoring`, `group_left`, `group_right`), the range selectors and the function names, and
//! the scanner keeps the test free of a dependency that would have to follow Prometheus's
//! grammar. Whether an expression parses as a whole is promtool's job
//! (`observability_tools.rs`: `promtool check rules` on the rules, and on every panel query).
//! The rule files are YAML read line by line for the same reason: they are ours, written in one
//! style (block scalars for long expressions), and the scanner refuses what it does not know.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use std::sync::OnceLock;
use std::time::Duration;

use meshkit::diag::probe::{ProbeResult, ProbeState};
use meshkit_node::metrics::catalogue::{self, Kind};
use meshkit_probe::metrics::Metrics;
use meshkit_probe::record::{AlertName, ProbeKey, RunRecord};
use serde_json::Value;

/// The scrape job of the probe agent (`meshkit-probe`): selectors with `job="meshkit-probe"`
/// are checked against the agent's families, the others against the node's catalogue.
const AGENT_JOB: &str = "meshkit-probe";

/// Labels every scraped series carries (Prometheus's target labels and the `cluster` and
/// `namespace` labels the scrape configuration adds).
const TARGET_LABELS: &[&str] = &["job", "instance", "cluster", "namespace"];

/// Series Prometheus makes itself, with their own labels. `up` of a node may carry `target`,
/// a target label the scrape configuration sets where `instance` is not the address the probe
/// agent probes (dashboards/README.md): `MeshKitNodeDown` reads it.
const BUILTIN: &[(&str, &[&str])] = &[
    ("up", &["target"]),
    ("ALERTS", &["alertname", "alertstate", "severity"]),
];

/// PromQL's functions and aggregations: an identifier before `(` must be one of them.
const FUNCTIONS: &[&str] = &[
    "abs",
    "absent",
    "absent_over_time",
    "avg_over_time",
    "ceil",
    "changes",
    "clamp",
    "clamp_max",
    "clamp_min",
    "count_over_time",
    "day_of_month",
    "day_of_week",
    "days_in_month",
    "delta",
    "deriv",
    "exp",
    "floor",
    "histogram_quantile",
    "holt_winters",
    "hour",
    "idelta",
    "increase",
    "irate",
    "label_join",
    "label_replace",
    "last_over_time",
    "ln",
    "log10",
    "log2",
    "max_over_time",
    "min_over_time",
    "minute",
    "month",
    "predict_linear",
    "present_over_time",
    "quantile_over_time",
    "rate",
    "resets",
    "round",
    "scalar",
    "sgn",
    "sort",
    "sort_desc",
    "sqrt",
    "stddev_over_time",
    "stdvar_over_time",
    "sum_over_time",
    "time",
    "timestamp",
    "vector",
    "year",
    "sum",
    "min",
    "max",
    "avg",
    "group",
    "stddev",
    "stdvar",
    "count",
    "count_values",
    "bottomk",
    "topk",
    "quantile",
];

/// Keywords that take a label list in parentheses.
const GROUPING: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// Keywords that stand alone.
const KEYWORDS: &[&str] = &["and", "or", "unless", "bool", "offset", "inf", "nan"];

/// Functions whose argument must be a counter (or a histogram's buckets, sum or count).
const COUNTER_FUNCTIONS: &[&str] = &["rate", "irate", "increase", "resets"];

/// The pack, at the top of the repository.
fn pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

fn read(path: &Path) -> String {
    std::fs::read_to_string(path).unwrap_or_else(|e| panic!("read {}: {e}", path.display()))
}

/// The files of `dir` ending in `.ext`, sorted.
fn files(dir: &Path, ext: &str) -> Vec<PathBuf> {
    let mut out: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == ext))
        .collect();
    out.sort();
    assert!(!out.is_empty(), "no .{ext} file in {}", dir.display());
    out
}

// ---------------------------------------------------------------------------------------------
// PromQL scanner.

/// A token of a PromQL expression.
#[derive(Clone, Debug, PartialEq)]
enum Token {
    /// A name: metric, label, function or keyword.
    Ident(String),
    /// A quoted string, without its quotes.
    Str(String),
    /// A number or a duration (`4`, `0.99`, `15m`).
    Number,
    /// The inside of a range or subquery, `[...]`.
    Range(String),
    /// A Grafana variable outside a string (`$cluster`, `${datasource}`).
    Var,
    /// Any other character (operators, parentheses, braces, commas).
    Punct(char),
}

/// Splits `expr` into tokens; an error for an unclosed string or range.
fn tokenize(expr: &str) -> Result<Vec<Token>, String> {
    let chars: Vec<char> = expr.chars().collect();
    let mut out = Vec::new();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_whitespace() {
            i += 1;
        } else if c == '#' {
            // A comment runs to the end of the line.
            while i < chars.len() && chars[i] != '\n' {
                i += 1;
            }
        } else if c == '"' || c == '\'' || c == '`' {
            let mut s = String::new();
            i += 1;
            loop {
                let Some(&d) = chars.get(i) else {
                    return Err(format!("unclosed string in `{expr}`"));
                };
                i += 1;
                if d == c {
                    break;
                }
                if d == '\\' && c != '`' {
                    if let Some(&e) = chars.get(i) {
                        s.push(e);
                        i += 1;
                    }
                    continue;
                }
                s.push(d);
            }
            out.push(Token::Str(s));
        } else if c == '[' {
            let start = i + 1;
            while i < chars.len() && chars[i] != ']' {
                i += 1;
            }
            if i == chars.len() {
                return Err(format!("unclosed range in `{expr}`"));
            }
            out.push(Token::Range(chars[start..i].iter().collect()));
            i += 1;
        } else if c.is_ascii_alphabetic() || c == '_' || c == ':' {
            let start = i;
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || "_:".contains(chars[i])) {
                i += 1;
            }
            out.push(Token::Ident(chars[start..i].iter().collect()));
        } else if c.is_ascii_digit() || c == '.' {
            while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '.') {
                i += 1;
            }
            out.push(Token::Number);
        } else if c == '$' {
            i += 1;
            if chars.get(i) == Some(&'{') {
                while i < chars.len() && chars[i] != '}' {
                    i += 1;
                }
                i += 1;
            } else {
                while i < chars.len() && (chars[i].is_ascii_alphanumeric() || chars[i] == '_') {
                    i += 1;
                }
            }
            out.push(Token::Var);
        } else {
            out.push(Token::Punct(c));
            i += 1;
        }
    }
    Ok(out)
}

/// A label matcher of a selector: `label op "value"`.
#[derive(Clone, Debug)]
struct Matcher {
    label: String,
    value: String,
}

/// A series selector: a metric name and its matchers.
#[derive(Clone, Debug)]
struct Selector {
    name: String,
    matchers: Vec<Matcher>,
    /// The function it is the direct argument of (`rate` in `rate(x[5m])`), if any.
    function: Option<String>,
}

/// What the checks need of one expression.
#[derive(Debug, Default)]
struct Scanned {
    selectors: Vec<Selector>,
    /// Labels named by `by`, `without`, `on`, `ignoring`, `group_left`, `group_right`.
    grouping: BTreeSet<String>,
    /// The inside of every range selector and subquery.
    ranges: Vec<String>,
}

/// Reads the selectors, grouping labels and ranges of `expr`; an error for what the scanner
/// does not know (an unknown function, unbalanced parentheses, a malformed matcher).
fn scan(expr: &str) -> Result<Scanned, String> {
    let tokens = tokenize(expr)?;
    let mut out = Scanned::default();
    let mut depth: i32 = 0;
    // The function each open parenthesis belongs to.
    let mut calls: Vec<Option<String>> = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        match &tokens[i] {
            Token::Punct('(') => {
                depth += 1;
                calls.push(None);
                i += 1;
            }
            Token::Punct(')') => {
                depth -= 1;
                calls.pop();
                if depth < 0 {
                    return Err(format!("unbalanced `)` in `{expr}`"));
                }
                i += 1;
            }
            Token::Punct('{') => return Err(format!("a selector without a name in `{expr}`")),
            Token::Range(inside) => {
                out.ranges.push(inside.trim().to_owned());
                i += 1;
            }
            Token::Ident(word) => {
                let lower = word.to_ascii_lowercase();
                let next = tokens.get(i + 1);
                if GROUPING.contains(&lower.as_str()) {
                    i += 1;
                    if next == Some(&Token::Punct('(')) {
                        i += 1;
                        loop {
                            match tokens.get(i) {
                                Some(Token::Ident(label)) => {
                                    out.grouping.insert(label.clone());
                                }
                                Some(Token::Punct(',')) => {}
                                Some(Token::Punct(')')) => break,
                                other => {
                                    return Err(format!(
                                        "`{other:?}` in the label list of `{word}` in `{expr}`"
                                    ));
                                }
                            }
                            i += 1;
                        }
                        i += 1;
                    }
                } else if KEYWORDS.contains(&lower.as_str()) {
                    i += 1;
                } else if FUNCTIONS.contains(&word.as_str())
                    && matches!(next, Some(Token::Ident(g)) if g == "by" || g == "without")
                {
                    // An aggregation with its grouping first: `sum by (cluster) (...)`.
                    i += 1;
                } else if next == Some(&Token::Punct('(')) {
                    if !FUNCTIONS.contains(&word.as_str()) {
                        return Err(format!("unknown function `{word}` in `{expr}`"));
                    }
                    depth += 1;
                    calls.push(Some(word.clone()));
                    i += 2;
                } else {
                    // A metric name, with its matchers if braces follow.
                    let function = calls.last().cloned().flatten();
                    let mut selector = Selector {
                        name: word.clone(),
                        matchers: Vec::new(),
                        function,
                    };
                    i += 1;
                    if tokens.get(i) == Some(&Token::Punct('{')) {
                        i += 1;
                        loop {
                            match tokens.get(i) {
                                Some(Token::Punct('}')) => break,
                                Some(Token::Punct(',')) => i += 1,
                                Some(Token::Ident(label)) => {
                                    // `=`, `!=`, `=~` or `!~`, then the value.
                                    let mut j = i + 1;
                                    let mut op = String::new();
                                    while let Some(Token::Punct(c @ ('=' | '!' | '~'))) =
                                        tokens.get(j)
                                    {
                                        op.push(*c);
                                        j += 1;
                                    }
                                    if !["=", "!=", "=~", "!~"].contains(&op.as_str()) {
                                        return Err(format!(
                                            "matcher `{label}` without an operator in `{expr}`"
                                        ));
                                    }
                                    let Some(Token::Str(value)) = tokens.get(j) else {
                                        return Err(format!(
                                            "matcher `{label}{op}` without a quoted value in \
                                             `{expr}`"
                                        ));
                                    };
                                    selector.matchers.push(Matcher {
                                        label: label.clone(),
                                        value: value.clone(),
                                    });
                                    i = j + 1;
                                }
                                other => {
                                    return Err(format!(
                                        "`{other:?}` among the matchers of `{word}` in `{expr}`"
                                    ));
                                }
                            }
                        }
                        i += 1;
                    }
                    out.selectors.push(selector);
                }
            }
            Token::Str(_) | Token::Number | Token::Var | Token::Punct(_) => i += 1,
        }
    }
    if depth != 0 {
        return Err(format!("unbalanced parentheses in `{expr}`"));
    }
    if out.selectors.is_empty() {
        return Err(format!("no metric in `{expr}`"));
    }
    Ok(out)
}

// ---------------------------------------------------------------------------------------------
// The metrics an expression may name.

/// What a name stands for: its labels, and whether `rate` may read it.
#[derive(Clone, Debug)]
struct Known {
    labels: BTreeSet<String>,
    counter_like: bool,
}

/// The catalogue's families, with the series names histograms expand to, and the series
/// Prometheus makes itself.
fn catalogue_names() -> BTreeMap<String, Known> {
    let mut out = BTreeMap::new();
    let with_targets = |labels: &[&str]| -> BTreeSet<String> {
        labels
            .iter()
            .chain(TARGET_LABELS)
            .map(|l| (*l).to_owned())
            .collect()
    };
    for family in catalogue::ALL {
        match family.kind {
            Kind::Counter | Kind::Gauge => {
                let known = Known {
                    labels: with_targets(family.labels),
                    counter_like: family.kind == Kind::Counter,
                };
                out.insert(family.name.to_owned(), known);
            }
            Kind::Histogram => {
                let mut bucket = with_targets(family.labels);
                bucket.insert("le".to_owned());
                out.insert(
                    format!("{}_bucket", family.name),
                    Known {
                        labels: bucket,
                        counter_like: true,
                    },
                );
                for suffix in ["_sum", "_count"] {
                    out.insert(
                        format!("{}{suffix}", family.name),
                        Known {
                            labels: with_targets(family.labels),
                            counter_like: true,
                        },
                    );
                }
            }
        }
    }
    for (name, labels) in BUILTIN {
        out.insert(
            (*name).to_owned(),
            Known {
                labels: with_targets(labels),
                counter_like: false,
            },
        );
    }
    out
}

/// The probe agent's families as its own code exports them: a [`Metrics`] of the agent, fed
/// one run, a state change, a reload and its counters through the agent's API, rendered and
/// read back (names, label names, types). A family the agent adds, renames or relabels
/// changes this catalogue with no edit here; one fed by a method not called below is missing
/// (a panel using it fails the lint, the safe side), so every method that sets a series is
/// called. Keyed like [`catalogue_names`]: counters with `_total`, histograms expanded.
fn agent_catalogue() -> &'static BTreeMap<String, Known> {
    static CATALOGUE: OnceLock<BTreeMap<String, Known>> = OnceLock::new();
    CATALOGUE.get_or_init(|| {
        let metrics = Metrics::new("lint");
        let key = ProbeKey {
            cluster: "c1".to_owned(),
            namespace: "default".to_owned(),
            group: "core".to_owned(),
            probe: "core/api-peers@10.0.0.1:8101".to_owned(),
        };
        let record = RunRecord {
            key: key.clone(),
            kind: "api".to_owned(),
            target: "10.0.0.1:8101".to_owned(),
            at_unix_ms: 0,
            result: ProbeResult::Pass,
            latency: Duration::from_millis(3),
            http_version: None,
            error: None,
        };
        metrics.run(&record, Some(1_900_000_000));
        metrics.state_change(&key, "api", "10.0.0.1:8101", ProbeState::Healthy);
        metrics.alert_latency(
            &key,
            "api",
            "10.0.0.1:8101",
            Some(Duration::from_millis(500)),
        );
        metrics.reload(true, 1.0);
        metrics.set_probes(1);
        metrics.set_notices_dropped(1);
        metrics.set_sink("history", "written", 1);
        agent_families(&metrics.render())
    })
}

/// The agent's target labels: its scrape job adds no `cluster` (its series carry the probed
/// group's own `cluster` and `namespace`).
const AGENT_TARGET_LABELS: &[&str] = &["job", "instance"];

/// The families of a Prometheus text exposition `text`, with the agent's target labels.
fn agent_families(text: &str) -> BTreeMap<String, Known> {
    let mut types: BTreeMap<&str, &str> = BTreeMap::new();
    for line in text.lines() {
        if let Some(rest) = line.strip_prefix("# TYPE ") {
            let mut parts = rest.split_whitespace();
            if let (Some(name), Some(kind)) = (parts.next(), parts.next()) {
                types.insert(name, kind);
            }
        }
    }
    let mut out: BTreeMap<String, Known> = BTreeMap::new();
    for line in text
        .lines()
        .filter(|l| !l.starts_with('#') && !l.is_empty())
    {
        let (name, labels) = match line.split_once('{') {
            Some((name, rest)) => (name, rest.rsplit_once('}').map_or("", |(l, _)| l)),
            None => (line.split_whitespace().next().unwrap_or_default(), ""),
        };
        let base = ["_total", "_bucket", "_sum", "_count"]
            .iter()
            .find_map(|suffix| name.strip_suffix(suffix).filter(|b| types.contains_key(b)))
            .unwrap_or(name);
        let counter_like = matches!(types.get(base), Some(&"counter" | &"histogram"));
        // Label names: every `name="` of the set (values are ours, without `",`).
        let names = labels
            .split("\",")
            .filter_map(|pair| pair.split_once('=').map(|(l, _)| l.trim().to_owned()))
            .filter(|l| !l.is_empty());
        let known = out.entry(name.to_owned()).or_insert_with(|| Known {
            labels: AGENT_TARGET_LABELS
                .iter()
                .map(|l| (*l).to_owned())
                .collect(),
            counter_like,
        });
        known.labels.extend(names);
    }
    out.insert(
        "up".to_owned(),
        Known {
            labels: AGENT_TARGET_LABELS
                .iter()
                .map(|l| (*l).to_owned())
                .collect(),
            counter_like: false,
        },
    );
    out
}

/// The job a selector names with `job="..."`, if any.
fn job_of(selector: &Selector) -> Option<&str> {
    selector
        .matchers
        .iter()
        .find(|m| m.label == "job")
        .map(|m| m.value.as_str())
}

/// Checks the selectors and grouping labels of `expr` against `known` (and, for selectors of
/// `job="meshkit-probe"`, against the probe agent's families); the problems, each prefixed
/// with `place`.
fn check_expr(place: &str, expr: &str, known: &BTreeMap<String, Known>) -> Vec<String> {
    let scanned = match scan(expr) {
        Ok(s) => s,
        Err(e) => return vec![format!("{place}: {e}")],
    };
    let mut problems = Vec::new();
    let mut labels_in_use: BTreeSet<String> =
        TARGET_LABELS.iter().map(|l| (*l).to_owned()).collect();
    let agent = agent_catalogue();
    for selector in &scanned.selectors {
        let job = job_of(selector);
        // meshkitd and the agent both export `mesh_probe_state`, `mesh_probe_results_total`,
        // `mesh_probe_duration_seconds` (and `up`), with other labels: a selector without a
        // job reads both, and a node rule would fire on the agent's series.
        if job.is_none() && known.contains_key(&selector.name) && agent.contains_key(&selector.name)
        {
            problems.push(format!(
                "{place}: `{}` is exported by meshkitd and by meshkit-probe: say which with \
                 job=\"meshkit\" or job=\"{AGENT_JOB}\"",
                selector.name
            ));
        }
        let found = if job == Some(AGENT_JOB) {
            agent.get(&selector.name)
        } else {
            known
                .get(&selector.name)
                .or_else(|| job.is_none().then(|| agent.get(&selector.name)).flatten())
        };
        let Some(k) = found else {
            problems.push(format!(
                "{place}: `{}` is not in the metric catalogue (nor a recording rule, nor the \
                 probe agent's families for job=\"{AGENT_JOB}\")",
                selector.name
            ));
            continue;
        };
        labels_in_use.extend(k.labels.iter().cloned());
        for m in &selector.matchers {
            if !k.labels.contains(&m.label) {
                problems.push(format!(
                    "{place}: `{}` has no label `{}` (it has {:?})",
                    selector.name, m.label, k.labels
                ));
            }
        }
        if let Some(f) = &selector.function
            && COUNTER_FUNCTIONS.contains(&f.as_str())
            && !k.counter_like
        {
            problems.push(format!(
                "{place}: `{f}` of `{}`, which is not a counter",
                selector.name
            ));
        }
    }
    for label in &scanned.grouping {
        if !labels_in_use.contains(label) {
            problems.push(format!(
                "{place}: groups on `{label}`, which none of its metrics has"
            ));
        }
    }
    problems
}

/// The labels a recording rule's series carry: its outer `by` labels if it groups, else those
/// of the series it reads.
fn recorded_labels(expr: &str, known: &BTreeMap<String, Known>) -> BTreeSet<String> {
    let Ok(scanned) = scan(expr) else {
        return BTreeSet::new();
    };
    // A grouped rule keeps its grouping labels only: a panel filtering a recorded series on
    // a label its `by` dropped (`namespace`, say) returns nothing, and fails here.
    if scanned.grouping.is_empty() {
        let mut labels: BTreeSet<String> = TARGET_LABELS.iter().map(|l| (*l).to_owned()).collect();
        for s in &scanned.selectors {
            if let Some(k) = known.get(&s.name) {
                labels.extend(k.labels.iter().cloned());
            }
        }
        labels
    } else {
        scanned.grouping
    }
}

// ---------------------------------------------------------------------------------------------
// Rule files, read line by line.

/// One rule: `record` or `alert`, with its fields (`expr`, `for`, `severity`, annotations).
#[derive(Debug, Default, Clone)]
struct Rule {
    record: Option<String>,
    alert: Option<String>,
    fields: BTreeMap<String, String>,
}

/// Indentation of a line.
fn indent(line: &str) -> usize {
    line.len() - line.trim_start().len()
}

/// The rules of a rule file. Keys are read as `key: value`; a value that is a block scalar
/// (`|`, `|-`, `>`, `>-`) runs on the lines indented deeper than its key.
fn parse_rules(text: &str) -> Result<Vec<Rule>, String> {
    let lines: Vec<&str> = text.lines().collect();
    let mut rules: Vec<Rule> = Vec::new();
    let mut i = 0;
    while i < lines.len() {
        let line = lines[i];
        let trimmed = line.trim_start().trim_start_matches("- ");
        i += 1;
        if trimmed.is_empty() || trimmed.starts_with('#') {
            continue;
        }
        let Some((key, value)) = trimmed.split_once(':') else {
            return Err(format!("line {i}: not `key: value`: {line}"));
        };
        let key = key.trim().to_owned();
        let mut value = value.trim().to_owned();
        if ["|", "|-", ">", ">-"].contains(&value.as_str()) {
            let folded = value.starts_with('>');
            let mut block = Vec::new();
            while i < lines.len() && (lines[i].trim().is_empty() || indent(lines[i]) > indent(line))
            {
                block.push(lines[i].trim());
                i += 1;
            }
            value = block
                .join(if folded { " " } else { "\n" })
                .trim()
                .to_owned();
        }
        match key.as_str() {
            "record" | "alert" => {
                let mut rule = Rule::default();
                if key == "record" {
                    rule.record = Some(value);
                } else {
                    rule.alert = Some(value);
                }
                rules.push(rule);
            }
            _ => {
                if let Some(rule) = rules.last_mut() {
                    rule.fields.insert(key, value);
                }
            }
        }
    }
    Ok(rules)
}

/// Every problem of a rule file: metrics and labels of each expression, the fields of each
/// alert, its runbook section in `runbooks`. Recording rules become known names as they come.
fn lint_rules(text: &str, runbooks: &str) -> Vec<String> {
    let rules = match parse_rules(text) {
        Ok(r) => r,
        Err(e) => return vec![e],
    };
    let mut known = catalogue_names();
    let mut problems = Vec::new();
    let headings: BTreeSet<&str> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .map(str::trim)
        .collect();
    for rule in &rules {
        let name = rule
            .record
            .as_deref()
            .or(rule.alert.as_deref())
            .unwrap_or("?");
        let Some(expr) = rule.fields.get("expr") else {
            problems.push(format!("{name}: no expr"));
            continue;
        };
        problems.extend(check_expr(name, expr, &known));
        if let Some(record) = &rule.record {
            if record.split(':').count() != 3 {
                problems.push(format!("{record}: not named level:metric:operation"));
            }
            let labels = recorded_labels(expr, &known);
            known.insert(
                record.clone(),
                Known {
                    labels,
                    counter_like: false,
                },
            );
        }
        if let Some(alert) = &rule.alert {
            match rule.fields.get("severity").map(String::as_str) {
                Some("warning" | "critical") => {}
                other => problems.push(format!("{alert}: severity {other:?}")),
            }
            for field in ["summary", "description", "runbook_url", "for"] {
                if rule.fields.get(field).is_none_or(|v| v.is_empty()) {
                    problems.push(format!("{alert}: no {field}"));
                }
            }
            let anchor = format!("docs/runbooks.md#{}", alert.to_lowercase());
            if !rule
                .fields
                .get("runbook_url")
                .is_some_and(|u| u.ends_with(&anchor))
            {
                problems.push(format!("{alert}: runbook_url does not end in {anchor}"));
            }
            if !headings.contains(alert.as_str()) {
                problems.push(format!(
                    "{alert}: no `## {alert}` section in docs/runbooks.md"
                ));
            }
        }
    }
    problems
}

/// The alerts of the rule files, and the recording rules with their labels (for panels).
fn rules_of_the_pack() -> (BTreeSet<String>, BTreeMap<String, Known>) {
    let mut known = catalogue_names();
    let mut alerts = BTreeSet::new();
    for file in files(&pack().join("rules"), "yml") {
        for rule in parse_rules(&read(&file)).expect("the rules parse") {
            if let Some(alert) = rule.alert {
                alerts.insert(alert);
            }
            if let (Some(record), Some(expr)) = (rule.record, rule.fields.get("expr")) {
                let labels = recorded_labels(expr, &known);
                known.insert(
                    record,
                    Known {
                        labels,
                        counter_like: false,
                    },
                );
            }
        }
    }
    (alerts, known)
}

// ---------------------------------------------------------------------------------------------
// promtool unit tests: which alerts have a firing and a quiet case.

/// The alerts a promtool test file expects to fire (with annotations checked) and those it
/// expects to stay quiet, from its `alertname:` and `exp_alerts:` lines.
fn promtool_cases(text: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let lines: Vec<&str> = text.lines().map(str::trim).collect();
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for (i, line) in lines.iter().enumerate() {
        let Some(alert) = line.strip_prefix("alertname:") else {
            continue;
        };
        let alert = alert.trim().to_owned();
        match lines.get(i + 1) {
            Some(&"exp_alerts: []") => {
                quiet.insert(alert);
            }
            Some(&"exp_alerts:") => {
                // Fires, if its expected alerts check labels and the runbook annotation.
                let case: Vec<&str> = lines[i + 2..]
                    .iter()
                    .take_while(|l| !l.starts_with("- eval_time:") && !l.starts_with("- name:"))
                    .copied()
                    .collect();
                if case.iter().any(|l| l.starts_with("- exp_labels:"))
                    && case.iter().any(|l| l.starts_with("runbook_url:"))
                    && case.iter().any(|l| l.starts_with("summary:"))
                {
                    fires.insert(alert);
                }
            }
            _ => {}
        }
    }
    (fires, quiet)
}

// ---------------------------------------------------------------------------------------------
// Dashboards.

/// The panels of a dashboard, those inside rows included.
fn panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        for inner in panel["panels"].as_array().into_iter().flatten() {
            out.push(inner);
        }
    }
    out
}

/// Whether `datasource` is the dashboard's variable (`${datasource}` or `$datasource`).
fn uses_datasource_variable(datasource: &Value) -> bool {
    let uid = datasource
        .get("uid")
        .and_then(Value::as_str)
        .or(datasource.as_str());
    matches!(uid, Some("${datasource}" | "$datasource"))
}

/// Every problem of one dashboard (file stem `stem`): uid, variables, panels, queries.
fn lint_dashboard(stem: &str, dashboard: &Value, known: &BTreeMap<String, Known>) -> Vec<String> {
    let mut problems = Vec::new();
    let uid = dashboard["uid"].as_str().unwrap_or_default();
    if uid != format!("meshkit-{stem}") {
        problems.push(format!(
            "{stem}: uid {uid:?}, not \"meshkit-{stem}\" (uids stay stable)"
        ));
    }
    if dashboard["title"].as_str().is_none_or(str::is_empty) {
        problems.push(format!("{stem}: no title"));
    }
    let variables: BTreeMap<&str, &Value> = dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(|v| Some((v["name"].as_str()?, v)))
        .collect();
    match variables.get("datasource") {
        Some(v) if v["type"] == "datasource" && v["query"] == "prometheus" => {}
        _ => problems.push(format!(
            "{stem}: no `datasource` variable of type prometheus"
        )),
    }
    // The node's target labels, chained as the mixins chain them: each variable's values are
    // those under the ones before it (`namespace` under `$cluster`, `instance` under both).
    for (name, under) in [
        ("cluster", &[][..]),
        ("namespace", &["cluster"][..]),
        ("instance", &["cluster", "namespace"][..]),
    ] {
        match variables.get(name) {
            Some(v) if v["type"] == "query" && uses_datasource_variable(&v["datasource"]) => {
                let query = v["query"]["query"].as_str().or(v["query"].as_str());
                if let Some(query) = query {
                    let inner = query
                        .strip_prefix("label_values(")
                        .and_then(|q| q.strip_suffix(')'))
                        .and_then(|q| q.rsplit_once(','))
                        .map(|(selector, _)| selector);
                    match inner {
                        Some(selector) => {
                            problems.extend(check_expr(
                                &format!("{stem}: variable {name}"),
                                selector,
                                known,
                            ));
                            for before in under {
                                if !selector.contains(&format!("{before}=~\"${before}\"")) {
                                    problems.push(format!(
                                        "{stem}: variable {name} is not chained under \
                                         {before}=~\"${before}\""
                                    ));
                                }
                            }
                        }
                        None => problems.push(format!(
                            "{stem}: variable {name} is not label_values(selector, label)"
                        )),
                    }
                }
            }
            _ => problems.push(format!(
                "{stem}: no `{name}` query variable on ${{datasource}}"
            )),
        }
    }
    let all = panels(dashboard);
    if all.is_empty() {
        problems.push(format!("{stem}: no panel"));
    }
    let mut ids = BTreeSet::new();
    for panel in all {
        let title = panel["title"].as_str().unwrap_or_default();
        let place = format!("{stem}: panel {title:?}");
        if title.is_empty() {
            problems.push(format!("{place}: no title"));
        }
        if !ids.insert(panel["id"].as_i64()) {
            problems.push(format!("{place}: id {} used twice", panel["id"]));
        }
        if panel["type"] == "row" {
            continue;
        }
        if panel["description"].as_str().is_none_or(|d| d.len() < 20) {
            problems.push(format!(
                "{place}: no description of what healthy looks like"
            ));
        }
        if panel["fieldConfig"]["defaults"]["unit"]
            .as_str()
            .is_none_or(str::is_empty)
        {
            problems.push(format!("{place}: no unit"));
        }
        if !uses_datasource_variable(&panel["datasource"]) {
            problems.push(format!("{place}: datasource is not ${{datasource}}"));
        }
        let targets = panel["targets"].as_array().cloned().unwrap_or_default();
        if targets.is_empty() {
            problems.push(format!("{place}: no query"));
        }
        for target in &targets {
            if !uses_datasource_variable(&target["datasource"]) {
                problems.push(format!(
                    "{place}: a query's datasource is not ${{datasource}}"
                ));
            }
            let Some(expr) = target["expr"].as_str() else {
                problems.push(format!("{place}: a query without expr"));
                continue;
            };
            problems.extend(check_expr(&place, expr, known));
            let Ok(scanned) = scan(expr) else { continue };
            // A legend's `{{label}}` must be a label the query's series can carry, or the
            // legend goes blank after a rename.
            let mut carried: BTreeSet<&str> = TARGET_LABELS.iter().copied().collect();
            carried.extend(scanned.grouping.iter().map(String::as_str));
            for selector in &scanned.selectors {
                let k = if job_of(selector) == Some(AGENT_JOB) {
                    agent_catalogue().get(&selector.name)
                } else {
                    known.get(&selector.name)
                };
                if let Some(k) = k {
                    carried.extend(k.labels.iter().map(String::as_str));
                }
            }
            let legend = target["legendFormat"].as_str().unwrap_or_default();
            for part in legend.split("{{").skip(1) {
                let label = part.split("}}").next().unwrap_or_default().trim();
                if !carried.contains(label) {
                    problems.push(format!(
                        "{place}: legend {legend:?} names `{label}`, which its series do not carry"
                    ));
                }
            }
            for range in &scanned.ranges {
                if range != "$__rate_interval" {
                    problems.push(format!(
                        "{place}: range [{range}] instead of [$__rate_interval] in `{expr}`"
                    ));
                }
            }
            for selector in &scanned.selectors {
                // Raw families are filtered by the cluster, namespace and instance variables;
                // recorded series (level:metric:operation) by the labels their level keeps
                // (every level keeps cluster and namespace; `instance...` levels the
                // instance). The probe agent's series: `cluster` and `namespace` are the
                // probed group's (where the family has them), `instance` the agent, filtered by
                // the `agent` variable where the dashboard has one.
                let level = selector.name.split(':').next().unwrap_or_default();
                let wanted: Vec<(&str, &str)> = if job_of(selector) == Some(AGENT_JOB) {
                    let labels = agent_catalogue().get(&selector.name).map(|k| &k.labels);
                    let mut w = Vec::new();
                    for label in ["cluster", "namespace"] {
                        if labels.is_some_and(|l| l.contains(label)) {
                            w.push((label, label));
                        }
                    }
                    if variables.contains_key("agent") {
                        w.push(("instance", "agent"));
                    }
                    w
                } else if !selector.name.contains(':') || level.starts_with("instance") {
                    vec![
                        ("cluster", "cluster"),
                        ("namespace", "namespace"),
                        ("instance", "instance"),
                    ]
                } else {
                    vec![("cluster", "cluster"), ("namespace", "namespace")]
                };
                for (label, variable) in wanted {
                    if !selector
                        .matchers
                        .iter()
                        .any(|m| m.label == label && m.value.contains(&format!("${variable}")))
                    {
                        problems.push(format!(
                            "{place}: `{}` is not filtered by {label}=~\"${variable}\"",
                            selector.name
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// Every dashboard of the pack, by file stem.
fn dashboards() -> Vec<(String, Value)> {
    files(&pack().join("grafana"), "json")
        .into_iter()
        .map(|path| {
            let stem = path
                .file_stem()
                .expect("a file name")
                .to_string_lossy()
                .into_owned();
            let json = serde_json::from_str(&read(&path))
                .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
            (stem, json)
        })
        .collect()
}

// ---------------------------------------------------------------------------------------------
// The tests.

fn rules_text() -> String {
    read(&pack().join("rules/meshkit.rules.yml"))
}

fn runbooks() -> String {
    read(&pack().join("../docs/runbooks.md"))
}

#[test]
fn rules_name_only_catalogue_metrics_and_labels_and_every_alert_has_a_runbook() {
    let problems = lint_rules(&rules_text(), &runbooks());
    assert!(problems.is_empty(), "rules:\n{}", problems.join("\n"));
}

#[test]
fn every_runbook_section_belongs_to_an_alert() {
    let (alerts, _) = rules_of_the_pack();
    // The probe agent's alerts go to Alertmanager straight, not through a rule: their sections
    // belong too, and each must exist (its alerts link to it).
    let agent = [AlertName::Failing, AlertName::Slow].map(AlertName::as_str);
    let runbooks = runbooks();
    let headings: BTreeSet<&str> = runbooks
        .lines()
        .filter_map(|l| l.strip_prefix("## "))
        .collect();
    let stale: Vec<&str> = headings
        .iter()
        .copied()
        .filter(|h| h.starts_with("MeshKit") && !alerts.contains(*h) && !agent.contains(h))
        .collect();
    assert!(stale.is_empty(), "runbook sections of no alert: {stale:?}");
    let missing: Vec<&str> = agent
        .into_iter()
        .filter(|a| !headings.contains(a))
        .collect();
    assert!(
        missing.is_empty(),
        "the probe agent's alerts without a runbook section: {missing:?}"
    );
}

#[test]
fn every_alert_has_a_promtool_case_that_fires_and_one_that_stays_quiet() {
    let (alerts, _) = rules_of_the_pack();
    assert!(alerts.len() >= 11, "alerts: {alerts:?}");
    let mut fires = BTreeSet::new();
    let mut quiet = BTreeSet::new();
    for file in files(&pack().join("rules/tests"), "yml") {
        let text = read(&file);
        assert!(
            text.contains("rule_files:\n  - ../meshkit.rules.yml"),
            "{} does not test meshkit.rules.yml",
            file.display()
        );
        let (f, q) = promtool_cases(&text);
        fires.extend(f);
        quiet.extend(q);
    }
    let missing: Vec<String> = alerts
        .iter()
        .flat_map(|a| {
            let mut m = Vec::new();
            if !fires.contains(a) {
                m.push(format!(
                    "{a}: no case where it fires (labels and annotations)"
                ));
            }
            if !quiet.contains(a) {
                m.push(format!("{a}: no case where it stays quiet"));
            }
            m
        })
        .collect();
    assert!(missing.is_empty(), "{}", missing.join("\n"));
    let unknown: Vec<&String> = fires
        .union(&quiet)
        .filter(|a| !alerts.contains(*a))
        .collect();
    assert!(
        unknown.is_empty(),
        "cases of alerts that do not exist: {unknown:?}"
    );
}

#[test]
fn dashboards_pass_the_lint() {
    let (_, known) = rules_of_the_pack();
    let mut uids = BTreeMap::new();
    let mut problems = Vec::new();
    for (stem, dashboard) in dashboards() {
        problems.extend(lint_dashboard(&stem, &dashboard, &known));
        if let Some(other) = uids.insert(dashboard["uid"].to_string(), stem.clone()) {
            problems.push(format!(
                "{stem}: uid {} also used by {other}",
                dashboard["uid"]
            ));
        }
    }
    // The eight (#15).
    for wanted in [
        "overview",
        "membership",
        "leadership",
        "shards",
        "queues",
        "transport",
        "probes",
        "chaos",
    ] {
        if !uids.values().any(|s| s == wanted) {
            problems.push(format!("no {wanted} dashboard"));
        }
    }
    assert!(problems.is_empty(), "dashboards:\n{}", problems.join("\n"));
}

// The checks above can fail: each breakage below is one a real change could make.

#[test]
fn a_renamed_metric_or_label_in_a_rule_fails_the_lint() {
    let rules = rules_text();
    let runbooks = runbooks();
    for (from, to, expected) in [
        (
            "mesh_gossip_refutations_total",
            "mesh_gossip_refutation_total",
            "`mesh_gossip_refutation_total` is not in the metric catalogue",
        ),
        ("scope_kind, le", "kind, le", "groups on `kind`"),
        (
            "reason=~\"expired|untrusted\"",
            "cause=~\"expired|untrusted\"",
            "has no label `cause`",
        ),
        (
            "rate(mesh_gossip_sent_bytes_total[5m])",
            "rate(mesh_gossip_members[5m])",
            "not a counter",
        ),
        (
            "severity: warning",
            "severity: page",
            "severity Some(\"page\")",
        ),
        (
            "docs/runbooks.md#meshkitnodedown",
            "docs/runbooks.md#nodedown",
            "MeshKitNodeDown: runbook_url",
        ),
    ] {
        assert!(rules.contains(from), "`{from}` is no longer in the rules");
        let problems = lint_rules(&rules.replacen(from, to, 1), &runbooks);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "renaming `{from}` to `{to}`: no problem with `{expected}` in {problems:#?}"
        );
    }
    let problems = lint_rules(
        &rules,
        &runbooks.replace("## MeshKitSuspicionStorm", "## Storm"),
    );
    assert!(
        problems
            .iter()
            .any(|p| p.contains("no `## MeshKitSuspicionStorm` section")),
        "{problems:#?}"
    );
}

/// Each `(from, to, expected)`: the dashboard `stem` (as compact JSON) with its first `from`
/// replaced by `to` fails the lint with a problem containing `expected`.
fn assert_breakages_fail(stem: &str, cases: &[(&str, &str, &str)]) {
    let (_, known) = rules_of_the_pack();
    let (stem, dashboard) = dashboards()
        .into_iter()
        .find(|(s, _)| s == stem)
        .unwrap_or_else(|| panic!("the {stem} dashboard"));
    let text = dashboard.to_string();
    for (from, to, expected) in cases {
        assert!(
            text.contains(from),
            "`{from}` is no longer in the {stem} dashboard"
        );
        let broken: Value = serde_json::from_str(&text.replacen(from, to, 1)).expect("JSON");
        let problems = lint_dashboard(&stem, &broken, &known);
        assert!(
            problems.iter().any(|p| p.contains(expected)),
            "replacing `{from}` by `{to}`: no problem with `{expected}` in {problems:#?}"
        );
    }
}

#[test]
fn a_broken_panel_fails_the_lint() {
    assert_breakages_fail(
        "membership",
        &[
            (
                "\"uid\":\"meshkit-membership\"",
                "\"uid\":\"membership\"",
                "uids stay stable",
            ),
            ("[$__rate_interval]", "[5m]", "range [5m]"),
            (
                "mesh_gossip_probes_failed_total",
                "mesh_gossip_probe_failures_total",
                "`mesh_gossip_probe_failures_total` is not in the metric catalogue",
            ),
            (
                "\"uid\":\"${datasource}\"",
                "\"uid\":\"prometheus\"",
                "datasource is not",
            ),
            ("\"unit\":\"", "\"unitx\":\"", "no unit"),
            ("\"description\":\"", "\"descr\":\"", "no description"),
            (
                "\"legendFormat\":\"{{state}}\"",
                "\"legendFormat\":\"{{status}}\"",
                "names `status`",
            ),
            (
                "instance=~\\\"$instance\\\"",
                "node=~\\\"$instance\\\"",
                "has no label `node`",
            ),
            // A panel that ignores the namespace variable, and a namespace variable that ignores
            // the cluster picked before it.
            (
                ", namespace=~\\\"$namespace\\\", instance=~\\\"$instance\\\"}[",
                ", instance=~\\\"$instance\\\"}[",
                "is not filtered by namespace=~\"$namespace\"",
            ),
            (
                "\"query\":\"label_values(up{job=\\\"meshkit\\\", cluster=~\\\"$cluster\\\"}, namespace)",
                "\"query\":\"label_values(up{job=\\\"meshkit\\\"}, namespace)",
                "variable namespace is not chained under cluster",
            ),
        ],
    );
}

/// A recorded series keeps only the labels of its rule's `by`: a panel reading
/// `cluster:mesh_shard_imbalance:max` on the namespace variable passes with the pack's rule
/// (`by (cluster, namespace)`) and fails with one that drops `namespace`.
#[test]
fn a_recording_rule_without_namespace_fails_the_panels_on_it() {
    let (_, known) = rules_of_the_pack();
    let (stem, shards) = dashboards()
        .into_iter()
        .find(|(s, _)| s == "shards")
        .expect("the shards dashboard");
    let from = "mesh_shard_imbalance{cluster=~\\\"$cluster\\\", namespace=~\\\"$namespace\\\", \
                instance=~\\\"$instance\\\"}";
    let to = "cluster:mesh_shard_imbalance:max{cluster=~\\\"$cluster\\\", \
              namespace=~\\\"$namespace\\\"}";
    let text = shards.to_string();
    assert!(
        text.contains(from),
        "`{from}` is no longer in the shards dashboard"
    );
    let recorded: Value = serde_json::from_str(&text.replacen(from, to, 1)).expect("JSON");
    let problem = "`cluster:mesh_shard_imbalance:max` has no label `namespace`";
    let with_pack = lint_dashboard(&stem, &recorded, &known);
    assert!(
        !with_pack.iter().any(|p| p.contains(problem)),
        "{with_pack:#?}"
    );
    let mut dropped = known;
    dropped.insert(
        "cluster:mesh_shard_imbalance:max".to_owned(),
        Known {
            labels: recorded_labels("max by (cluster) (mesh_shard_imbalance)", &dropped),
            counter_like: false,
        },
    );
    let problems = lint_dashboard(&stem, &recorded, &dropped);
    assert!(
        problems.iter().any(|p| p.contains(problem)),
        "{problems:#?}"
    );
}

/// The probe agent's panels are checked against the agent's own families: a renamed family or
/// label, a selector that does not say which job, a missing `$agent` filter all fail.
#[test]
fn a_broken_agent_panel_fails_the_lint() {
    assert_breakages_fail(
        "probes",
        &[
            (
                "meshkit_probe_config_last_reload_successful{job=\\\"meshkit-probe\\\"",
                "meshkit_probe_config_last_reload_ok{job=\\\"meshkit-probe\\\"",
                "`meshkit_probe_config_last_reload_ok` is not in the metric catalogue",
            ),
            (
                "sum by (cluster, target) (mesh_probe_state{job=\\\"meshkit-probe\\\"",
                "sum by (cluster, target) (mesh_probe_state{job=\\\"meshkit\\\"",
                "groups on `target`, which none of its metrics has",
            ),
            (
                "(probe_success{job=\\\"meshkit-probe\\\", cluster=~\\\"$cluster\\\"",
                "(probe_success{job=\\\"meshkit-probe\\\", region=~\\\"$cluster\\\"",
                "`probe_success` has no label `region`",
            ),
            (
                "sum by (kind, result) (rate(mesh_probe_results_total{job=\\\"meshkit-probe\\\", ",
                "sum by (kind, result) (rate(mesh_probe_results_total{",
                "exported by meshkitd and by meshkit-probe",
            ),
            (
                "up{job=\\\"meshkit-probe\\\", instance=~\\\"$agent\\\"}",
                "up{job=\\\"meshkit-probe\\\"}",
                "not filtered by instance=~\"$agent\"",
            ),
        ],
    );
}

/// The agent's catalogue is what its code renders: the blackbox names, its own families with
/// the `agent` label, and the per-probe labels.
#[test]
fn the_agent_catalogue_comes_from_the_agents_metrics() {
    let agent = agent_catalogue();
    for (name, label) in [
        ("probe_success", "target"),
        ("probe_http_version", "kind"),
        ("mesh_probe_results_total", "result"),
        ("mesh_probe_duration_seconds_bucket", "le"),
        ("mesh_probe_state", "namespace"),
        ("meshkit_probe_config_last_reload_successful", "agent"),
        (
            "meshkit_probe_config_last_reload_success_timestamp_seconds",
            "agent",
        ),
    ] {
        let known = agent
            .get(name)
            .unwrap_or_else(|| panic!("{name} missing from {:?}", agent.keys()));
        assert!(known.labels.contains(label), "{name}: {:?}", known.labels);
    }
    assert!(agent["mesh_probe_results_total"].counter_like);
    assert!(!agent["probe_success"].counter_like);
    // The agent's own families carry no `cluster` (its scrape job adds none).
    assert!(!agent["meshkit_probe_probes"].labels.contains("cluster"));
}

#[test]
fn the_scanner_reads_selectors_groupings_and_ranges() {
    let scanned = scan(
        "sum by (cluster, le) (rate(mesh_gossip_probe_rtt_seconds_bucket{cluster=~\"$cluster\", \
         instance=~\"$instance\"}[$__rate_interval])) / on (cluster) group_left \
         max(up{job=\"meshkit\"} offset 5m)",
    )
    .expect("scans");
    let names: Vec<&str> = scanned.selectors.iter().map(|s| s.name.as_str()).collect();
    assert_eq!(names, ["mesh_gossip_probe_rtt_seconds_bucket", "up"]);
    assert_eq!(scanned.selectors[0].function.as_deref(), Some("rate"));
    let labels: Vec<&str> = scanned.selectors[0]
        .matchers
        .iter()
        .map(|m| m.label.as_str())
        .collect();
    assert_eq!(labels, ["cluster", "instance"]);
    assert_eq!(scanned.selectors[0].matchers[0].value, "$cluster");
    assert_eq!(
        scanned.grouping,
        BTreeSet::from(["cluster".to_owned(), "le".to_owned()])
    );
    assert_eq!(scanned.ranges, ["$__rate_interval"]);
    assert!(
        scan("rat(mesh_gossip_probes_total[5m])").is_err(),
        "unknown function"
    );
    assert!(scan("sum(mesh_gossip_probes_total").is_err(), "unbalanced");
    assert!(
        scan("mesh_gossip_members{state}").is_err(),
        "matcher without operator"
    );
}
