//! The observability pack (`dashboards/`) checked by the tools that read it in production:
//! `promtool check rules` and `promtool test rules` (Debian's `prometheus` package) on the rule
//! files, their unit tests and every dashboard panel's query; `amtool check-config` and
//! `amtool config routes test` (Debian's `prometheus-alertmanager`) on the Alertmanager
//! configuration, and its inhibitions as a real Alertmanager on loopback applies them.
//!
//! These tests need those tools, so they are ignored by default (the runner reports them
//! skipped, not passed); `scripts/test.sh` installs both packages and runs them with
//! `--run-ignored only`, where a missing tool fails them. What needs no tool (every alert has a
//! firing and a quiet case, every metric exists in the catalogue, the dashboards' lint) is in
//! `dashboards_lint.rs`, in the default suite.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::TempDir;

/// How long one run of promtool or amtool may take.
const TOOL_LIMIT: Duration = Duration::from_secs(60);

/// The observability pack, at the top of the repository.
fn pack() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../dashboards")
}

/// The `*.yml` files of `dir`, sorted.
fn yaml_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("read {}: {e}", dir.display()))
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "yml"))
        .collect();
    files.sort();
    assert!(!files.is_empty(), "no .yml file in {}", dir.display());
    files
}

use common::tool;

/// Runs `program args` in `dir`; its exit status and what it printed (stdout and stderr).
/// Bounded by [`TOOL_LIMIT`] (the process is killed past it).
fn run(dir: &Path, program: &str, args: &[&str]) -> (bool, String) {
    let mut command = Command::new(program);
    command.args(args).current_dir(dir).stdin(Stdio::null());
    common::run_bounded(command, TOOL_LIMIT)
}

/// The rule files as strings relative to `dir`.
fn relative(files: &[PathBuf], dir: &Path) -> Vec<String> {
    files
        .iter()
        .map(|f| {
            f.strip_prefix(dir)
                .expect("under the directory")
                .to_string_lossy()
                .into_owned()
        })
        .collect()
}

#[test]
#[ignore = "needs promtool (Debian's prometheus package); scripts/test.sh runs it"]
fn rule_files_pass_promtool_check_rules() {
    let promtool = tool("promtool", "prometheus");
    let rules = pack().join("rules");
    let files = relative(&yaml_files(&rules), &rules);
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    let (passed, printed) = run(&rules, promtool, &args);
    assert!(passed, "promtool check rules {files:?}:\n{printed}");
    // promtool's lints (e.g. a duplicate rule) print warnings yet pass: none allowed.
    assert!(
        !printed.to_lowercase().contains("warning"),
        "promtool check rules warned:\n{printed}"
    );
}

#[test]
#[ignore = "needs promtool (Debian's prometheus package); scripts/test.sh runs it"]
fn alert_rules_pass_their_promtool_unit_tests() {
    let promtool = tool("promtool", "prometheus");
    let tests = pack().join("rules/tests");
    let files = relative(&yaml_files(&tests), &tests);
    let mut args = vec!["test", "rules"];
    args.extend(files.iter().map(String::as_str));
    let (passed, printed) = run(&tests, promtool, &args);
    assert!(passed, "promtool test rules {files:?}:\n{printed}");
    assert_eq!(
        printed.matches("SUCCESS").count(),
        files.len(),
        "one SUCCESS per test file:\n{printed}"
    );
}

/// The unit tests can fail: with one threshold of the rules changed, promtool test rules
/// reports the case that expected the alert. (Guards against tests that expect nothing, and
/// against a promtool that accepts anything.)
#[test]
#[ignore = "needs promtool (Debian's prometheus package); scripts/test.sh runs it"]
fn promtool_unit_tests_fail_on_a_broken_rule() {
    let promtool = tool("promtool", "prometheus");
    let original = std::fs::read_to_string(pack().join("rules/meshkit.rules.yml"))
        .expect("read the rule file");
    let threshold = "increase(mesh_gossip_refutations_total[15m]) >= 4";
    assert!(original.contains(threshold), "the flapping threshold moved");
    let dir = TempDir::new("broken-rules");
    std::fs::create_dir_all(dir.path().join("rules/tests")).expect("create the directories");
    std::fs::write(
        dir.path().join("rules/meshkit.rules.yml"),
        original.replace(
            threshold,
            "increase(mesh_gossip_refutations_total[15m]) >= 400",
        ),
    )
    .expect("write the broken rules");
    let test = std::fs::read_to_string(pack().join("rules/tests/membership.yml"))
        .expect("read the membership tests");
    std::fs::write(dir.path().join("rules/tests/membership.yml"), test)
        .expect("write the membership tests");
    let (passed, printed) = run(
        &dir.path().join("rules/tests"),
        promtool,
        &["test", "rules", "membership.yml"],
    );
    assert!(
        !passed,
        "promtool test rules passed a broken rule:\n{printed}"
    );
    assert!(
        printed.contains("member flapping fires"),
        "the failing case is not named:\n{printed}"
    );
}

#[test]
#[ignore = "needs amtool (Debian's prometheus-alertmanager package); scripts/test.sh runs it"]
fn alertmanager_config_passes_amtool_check_config() {
    let amtool = tool("amtool", "prometheus-alertmanager");
    let (passed, printed) = run(&pack(), amtool, &["check-config", "alertmanager.yml"]);
    assert!(passed, "amtool check-config:\n{printed}");
    assert!(printed.contains("4 inhibit rules"), "{printed}");
}

/// Labels of an alert and the receivers Alertmanager must send it to, in order.
const ROUTES: &[(&[&str], &str)] = &[
    (
        &[
            "alertname=MeshKitNodeDown",
            "severity=critical",
            "cluster=prod-eu",
        ],
        "pager,team-chat",
    ),
    (
        &[
            "alertname=MeshKitMemberFlapping",
            "severity=warning",
            "cluster=prod-eu",
        ],
        "team-chat",
    ),
    (
        &[
            "alertname=MeshKitNoRaftLeader",
            "severity=critical",
            "cluster=staging-1",
        ],
        "staging",
    ),
    (
        &[
            "alertname=MeshKitSuspicionStorm",
            "severity=warning",
            "cluster=dev-7",
        ],
        "staging",
    ),
    // The probe agent's alerts, with the labels it pushes (no `instance`): failing pages,
    // slow goes to the chat, the agent's own troubles (no `cluster`) to the chat.
    (
        &[
            "alertname=MeshKitProbeFailing",
            "severity=critical",
            "cluster=prod-eu",
            "namespace=default",
            "group=core",
            "kind=api",
            "target=10.0.0.1:8101",
        ],
        "pager,team-chat",
    ),
    (
        &[
            "alertname=MeshKitProbeSlow",
            "severity=warning",
            "cluster=prod-eu",
            "target=10.0.0.1:8101",
        ],
        "team-chat",
    ),
    (
        &[
            "alertname=MeshKitProbeAgentDown",
            "severity=warning",
            "instance=probe-a:9465",
        ],
        "team-chat",
    ),
    (
        &[
            "alertname=MeshKitProbeFailing",
            "severity=critical",
            "cluster=staging-1",
            "target=10.0.0.1:8101",
        ],
        "staging",
    ),
    // No severity: the default receiver.
    (&["alertname=Other", "cluster=prod-eu"], "team-chat"),
];

#[test]
#[ignore = "needs amtool (Debian's prometheus-alertmanager package); scripts/test.sh runs it"]
fn alertmanager_routes_by_severity_and_cluster() {
    let amtool = tool("amtool", "prometheus-alertmanager");
    for (labels, receivers) in ROUTES {
        let verify = format!("--verify.receivers={receivers}");
        let mut args = vec![
            "config",
            "routes",
            "test",
            "--config.file=alertmanager.yml",
            &verify,
        ];
        args.extend_from_slice(labels);
        let (passed, printed) = run(&pack(), amtool, &args);
        assert!(
            passed,
            "{labels:?} should reach {receivers}; amtool answered:\n{printed}"
        );
    }
    // The check can fail: a critical alert of a production cluster does not only reach chat.
    let (passed, printed) = run(
        &pack(),
        amtool,
        &[
            "config",
            "routes",
            "test",
            "--config.file=alertmanager.yml",
            "--verify.receivers=team-chat",
            "severity=critical",
            "cluster=prod-eu",
        ],
    );
    assert!(!passed, "amtool accepted a wrong receiver:\n{printed}");
}

/// Every query of every dashboard panel, with the Grafana variables replaced by what they
/// stand for (`$__rate_interval` by `1m`, the cluster and instance variables by `.*`).
fn panel_queries() -> Vec<(String, String)> {
    let mut out = Vec::new();
    let mut files: Vec<PathBuf> = std::fs::read_dir(pack().join("grafana"))
        .expect("read dashboards/grafana")
        .map(|e| e.expect("a directory entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for file in files {
        let text = std::fs::read_to_string(&file).expect("read a dashboard");
        let dashboard: serde_json::Value = serde_json::from_str(&text).expect("a JSON dashboard");
        for panel in dashboard["panels"].as_array().into_iter().flatten() {
            for target in panel["targets"].as_array().into_iter().flatten() {
                let Some(expr) = target["expr"].as_str() else {
                    continue;
                };
                let place = format!("{}: {}", file.display(), panel["title"]);
                let expr = expr
                    .replace("$__rate_interval", "1m")
                    .replace("$cluster", ".*")
                    .replace("$instance", ".*");
                out.push((place, expr));
            }
        }
    }
    out
}

/// Every panel query parses as PromQL: promtool checks them as the expressions of a rule file
/// (one recording rule per query).
#[test]
#[ignore = "needs promtool (Debian's prometheus package); scripts/test.sh runs it"]
fn every_panel_query_parses() {
    let promtool = tool("promtool", "prometheus");
    let queries = panel_queries();
    assert!(queries.len() >= 40, "only {} panel queries", queries.len());
    let write = |dir: &Path, queries: &[(String, String)]| {
        let mut text = String::from("groups:\n  - name: panels\n    rules:\n");
        for (i, (_, expr)) in queries.iter().enumerate() {
            let quoted = serde_json::to_string(expr).expect("a JSON string");
            text.push_str(&format!(
                "      - record: panel_query_{i}\n        expr: {quoted}\n"
            ));
        }
        std::fs::write(dir.join("panels.yml"), text).expect("write the panel rules");
    };
    let dir = TempDir::new("panel-queries");
    write(dir.path(), &queries);
    let (passed, printed) = run(dir.path(), promtool, &["check", "rules", "panels.yml"]);
    let listing: Vec<String> = queries
        .iter()
        .enumerate()
        .map(|(i, (place, expr))| format!("panel_query_{i}: {place}: {expr}"))
        .collect();
    assert!(
        passed,
        "promtool check rules on the panel queries:\n{printed}\n{}",
        listing.join("\n")
    );
    // The check can fail: a query with a missing parenthesis is refused.
    let mut broken = queries;
    broken[0].1.push('(');
    write(dir.path(), &broken);
    let (passed, printed) = run(dir.path(), promtool, &["check", "rules", "panels.yml"]);
    assert!(!passed, "promtool accepted a broken query:\n{printed}");
}

/// A real Alertmanager on loopback with `dashboards/alertmanager.yml` (Debian's
/// `prometheus-alertmanager`, started by the test kit), stopped when dropped.
struct Alertmanager {
    process: meshkit_testkit::alertmanager::Alertmanager,
    /// amtool's `--alertmanager.url=...` argument.
    url: String,
    _dir: TempDir,
}

impl Alertmanager {
    /// Starts it on a free loopback port, without its cluster (gossip) listener, and waits
    /// (bounded) until amtool reaches it.
    fn start(amtool: &str) -> Self {
        let dir = TempDir::new("alertmanager");
        let config = std::fs::read_to_string(pack().join("alertmanager.yml"))
            .expect("read dashboards/alertmanager.yml");
        let process = meshkit_testkit::alertmanager::Alertmanager::start(dir.path(), &config, &[]);
        let am = Self {
            url: format!("--alertmanager.url={}", process.url()),
            process,
            _dir: dir,
        };
        let deadline = Instant::now() + TOOL_LIMIT;
        loop {
            let (up, _) = run(&pack(), amtool, &["alert", "query", &am.url]);
            if up {
                break;
            }
            assert!(
                Instant::now() < deadline,
                "Alertmanager did not answer within {TOOL_LIMIT:?}:\n{}",
                am.process.log()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        am
    }
}

/// The inhibitions of `alertmanager.yml`, as a real Alertmanager applies them: alerts are
/// posted with amtool, and amtool's query says which are suppressed.
#[test]
#[ignore = "needs Alertmanager and amtool (Debian's prometheus-alertmanager); scripts/test.sh runs it"]
fn alertmanager_inhibits_as_configured() {
    let amtool = tool("amtool", "prometheus-alertmanager");
    let am = Alertmanager::start(amtool);
    // Each alert, and whether it must be inhibited.
    let alerts: &[(&[&str], bool)] = &[
        (
            &[
                "alertname=MeshKitNodeDown",
                "severity=critical",
                "cluster=prod-eu",
                "instance=node-1",
                "target=node-1",
            ],
            false,
        ),
        // ... and the probe agent's alerts against that node (labels as the agent pushes them:
        // `target`, no `instance`), not those against another node or of another cluster.
        (
            &[
                "alertname=MeshKitProbeFailing",
                "severity=critical",
                "cluster=prod-eu",
                "namespace=default",
                "group=core",
                "probe=core/api-peers@node-1",
                "kind=api",
                "target=node-1",
            ],
            true,
        ),
        (
            &[
                "alertname=MeshKitProbeSlow",
                "severity=warning",
                "cluster=prod-eu",
                "namespace=default",
                "group=core",
                "probe=core/transport-h3@node-1",
                "kind=transport",
                "target=node-1",
            ],
            true,
        ),
        (
            &[
                "alertname=MeshKitProbeFailing",
                "severity=critical",
                "cluster=prod-eu",
                "namespace=default",
                "group=core",
                "probe=core/api-peers@node-2",
                "kind=api",
                "target=node-2",
            ],
            false,
        ),
        (
            &[
                "alertname=MeshKitProbeFailing",
                "severity=critical",
                "cluster=prod-us",
                "namespace=default",
                "group=core",
                "probe=core/api-peers@node-1",
                "kind=api",
                "target=node-1",
            ],
            false,
        ),
        // Node down inhibits the other alerts of the same instance, not of another.
        (
            &[
                "alertname=MeshKitMemberFlapping",
                "severity=warning",
                "cluster=prod-eu",
                "instance=node-1",
            ],
            true,
        ),
        (
            &[
                "alertname=MeshKitCertificateExpiring",
                "severity=critical",
                "cluster=prod-eu",
                "instance=node-1",
            ],
            true,
        ),
        (
            &[
                "alertname=MeshKitMemberFlapping",
                "severity=warning",
                "cluster=prod-eu",
                "instance=node-2",
            ],
            false,
        ),
        (
            &[
                "alertname=MeshKitMemberFlapping",
                "severity=warning",
                "cluster=prod-us",
                "instance=node-1",
            ],
            false,
        ),
        // The critical certificate alert inhibits the warning of the same instance.
        (
            &[
                "alertname=MeshKitCertificateExpiring",
                "severity=critical",
                "cluster=prod-eu",
                "instance=node-3",
            ],
            false,
        ),
        (
            &[
                "alertname=MeshKitCertificateExpiring",
                "severity=warning",
                "cluster=prod-eu",
                "instance=node-3",
            ],
            true,
        ),
        (
            &[
                "alertname=MeshKitCertificateExpiring",
                "severity=warning",
                "cluster=prod-eu",
                "instance=node-4",
            ],
            false,
        ),
        // No Raft leader inhibits the quorum alert of its cluster, not of another.
        (
            &[
                "alertname=MeshKitNoRaftLeader",
                "severity=critical",
                "cluster=prod-eu",
                "instance=node-5",
            ],
            false,
        ),
        (
            &[
                "alertname=MeshKitRaftQuorumAtRisk",
                "severity=critical",
                "cluster=prod-eu",
            ],
            true,
        ),
        (
            &[
                "alertname=MeshKitRaftQuorumAtRisk",
                "severity=critical",
                "cluster=prod-us",
            ],
            false,
        ),
    ];
    for (labels, _) in alerts {
        let mut args = vec!["alert", "add", am.url.as_str()];
        args.extend_from_slice(labels);
        let (passed, printed) = run(&pack(), amtool, &args);
        assert!(passed, "amtool alert add {labels:?}:\n{printed}");
    }
    // Alertmanager's inhibitor learns the source alerts on its own goroutine, after `alert add`
    // has returned: ask again (bounded) until the answer settles, and report the last one.
    let deadline = Instant::now() + TOOL_LIMIT;
    loop {
        let (passed, printed) = run(
            &pack(),
            amtool,
            &[
                "alert",
                "query",
                &am.url,
                "--inhibited",
                "--active",
                "--output=json",
            ],
        );
        assert!(passed, "amtool alert query:\n{printed}");
        let wrong = inhibition_mismatches(alerts, &printed);
        if wrong.is_empty() {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "within {TOOL_LIMIT:?}:\n{}\n--- amtool's answer:\n{printed}",
            wrong.join("\n")
        );
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// What in amtool's JSON answer `printed` differs from `alerts` (each alert's labels and
/// whether it must be inhibited); empty when everything is as expected.
fn inhibition_mismatches(alerts: &[(&[&str], bool)], printed: &str) -> Vec<String> {
    let answer: serde_json::Value = match serde_json::from_str(printed) {
        Ok(answer) => answer,
        Err(e) => return vec![format!("not JSON: {e}")],
    };
    let Some(listed) = answer.as_array() else {
        return vec!["not a list of alerts".to_owned()];
    };
    if listed.len() != alerts.len() {
        return vec![format!(
            "{} alerts listed, not {}",
            listed.len(),
            alerts.len()
        )];
    }
    let mut wrong = Vec::new();
    for (labels, inhibited) in alerts {
        let found = listed.iter().find(|a| {
            let have = a["labels"].as_object().map_or(0, serde_json::Map::len);
            have == labels.len()
                && labels.iter().all(|l| {
                    let (k, v) = l.split_once('=').expect("label=value");
                    a["labels"][k] == v
                })
        });
        let Some(found) = found else {
            wrong.push(format!("{labels:?} not listed"));
            continue;
        };
        let by = found["status"]["inhibitedBy"]
            .as_array()
            .map_or(0, Vec::len);
        if (by > 0) != *inhibited {
            wrong.push(format!(
                "{labels:?} should {}be inhibited: {}",
                if *inhibited { "" } else { "not " },
                found["status"]
            ));
        }
    }
    wrong
}
