//! Hot reload against a real node: `POST /-/reload` applies a valid file (probes added and
//! re-registered with a new threshold, without a restart) and refuses a bad one (400 naming the
//! key, `meshkit_probe_config_last_reload_successful` 0, the old probes still running); a
//! change of the file alone reloads it when `reload_on_change` is on.

mod agent_support;

use std::time::Duration;

use agent_support::{http, metrics_until, probe, series, write_probes_toml};
use meshkit_probe::agent;
use meshkit_testkit::fixtures::{TempDir, observer_token_file, start_cluster};

const LIMIT: Duration = Duration::from_secs(20);

fn groups(target: &str, failure_threshold: u32, more: bool) -> String {
    let mut text = format!(
        "[defaults]\ninterval = \"300ms\"\ntimeout = \"300ms\"\nsuccess_threshold = 1\n\n\
         [[group]]\nname = \"core\"\ncluster = \"test\"\ntargets = [\"{target}\"]\n\
         probes = [\"api\"]\nfailure_threshold = {failure_threshold}\n\
         [group.api]\nendpoints = [\"peers\"]\n"
    );
    if more {
        text.push_str(&format!(
            "\n[[group]]\nname = \"more\"\ncluster = \"test\"\ntargets = [\"{target}\"]\n\
             probes = [\"authz\"]\n"
        ));
    }
    text
}

/// POST /-/reload: a valid file is applied, a bad one refused with the old probes running.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_valid_reload_applies_and_a_bad_one_is_refused() {
    let dir = TempDir::new("probe-agent-reload");
    let nodes = start_cluster(dir.path(), 1).await;
    let target = nodes[0]
        .control_addr()
        .expect("a control listener")
        .to_string();
    let token = observer_token_file(dir.path());
    let off = "reload_on_change = false";
    let path = write_probes_toml(dir.path(), &token, off, &groups(&target, 2, false));
    let agent = agent::start(&path).await.expect("the agent starts");
    let addr = agent.listen_addr();
    let core = probe(&format!("core/api-peers@{target}"));
    let more = probe(&format!("more/authz@{target}"));
    let healthy = |n: &str, text: &str| {
        series(text, "mesh_probe_state", &[n, "state=\"healthy\""]) == Some(1.0)
    };
    let (ok, text) = metrics_until(addr, LIMIT, |t| healthy(&core, t)).await;
    assert!(ok, "core not healthy:\n{text}");

    // A new group and another threshold for the old one.
    write_probes_toml(dir.path(), &token, off, &groups(&target, 3, true));
    let (status, body) = http(addr, "POST", "/-/reload").await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("2 probes (2 started, 1 stopped)"), "{body}");
    let (ok, text) = metrics_until(addr, LIMIT, |t| healthy(&core, t) && healthy(&more, t)).await;
    assert!(ok, "not both healthy after the reload:\n{text}");
    let agent_label = "agent=\"probe-test\"";
    assert_eq!(
        series(
            &text,
            "meshkit_probe_config_last_reload_successful",
            &[agent_label]
        ),
        Some(1.0)
    );

    // A bad file: refused, naming the key; the probes go on.
    let bad = groups(&target, 3, true).replace("timeout = \"300ms\"", "timeout = \"2s\"");
    write_probes_toml(dir.path(), &token, off, &bad);
    let (status, body) = http(addr, "POST", "/-/reload").await;
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("defaults.timeout"), "{body}");
    let (_, text) = http(addr, "GET", "/metrics").await;
    assert_eq!(
        series(
            &text,
            "meshkit_probe_config_last_reload_successful",
            &[agent_label]
        ),
        Some(0.0)
    );
    let runs = |text: &str| {
        series(
            text,
            "mesh_probe_results_total",
            &[&more, "result=\"pass\""],
        )
    };
    let before = runs(&text).unwrap_or(0.0);
    let (ok, text) = metrics_until(addr, LIMIT, |t| runs(t).unwrap_or(0.0) >= before + 3.0).await;
    assert!(ok, "the old probes stopped after a refused reload:\n{text}");
    assert_eq!(agent.probes().await.unwrap().len(), 2);
    agent.stop().await;
    for node in nodes {
        node.stop().await;
    }
}

/// With `reload_on_change` (the default), writing the file is enough: a group removed stops,
/// its series leave `/metrics`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_changed_file_is_reloaded_by_itself() {
    let dir = TempDir::new("probe-agent-file-reload");
    let nodes = start_cluster(dir.path(), 1).await;
    let target = nodes[0]
        .control_addr()
        .expect("a control listener")
        .to_string();
    let token = observer_token_file(dir.path());
    let path = write_probes_toml(dir.path(), &token, "", &groups(&target, 2, true));
    let agent = agent::start(&path).await.expect("the agent starts");
    let addr = agent.listen_addr();
    let more = probe(&format!("more/authz@{target}"));
    let (ok, text) = metrics_until(addr, LIMIT, |t| {
        series(t, "probe_success", &[&more]) == Some(1.0)
    })
    .await;
    assert!(ok, "more/authz never passed:\n{text}");

    write_probes_toml(dir.path(), &token, "", &groups(&target, 2, false));
    let (ok, text) = metrics_until(addr, LIMIT, |t| !t.contains("more/authz")).await;
    assert!(ok, "the removed group still shows:\n{text}");
    assert_eq!(
        agent.probes().await.unwrap(),
        [format!("core/api-peers@{target}")]
    );
    agent.stop().await;
    for node in nodes {
        node.stop().await;
    }
}
