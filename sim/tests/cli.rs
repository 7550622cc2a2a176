//! The `meshkit-sim` command's contract: exit codes, error messages, JSON lines, replay lines.

use std::path::PathBuf;
use std::process::Command;

fn sim() -> Command {
    Command::new(env!("CARGO_BIN_EXE_meshkit-sim"))
}

fn scratch(name: &str, text: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("meshkit-sim-cli-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join(name);
    std::fs::write(&path, text).unwrap();
    path
}

const SMALL: &str = "name = \"small\"\ndescription = \"t\"\n[topology]\nnodes = 12\n[run]\nduration = \"20s\"\n\
                     [[fault]]\nat = \"5s\"\naction = \"crash\"\nnodes = \"1\"\n";

#[test]
fn a_scenario_error_exits_2_with_file_line_and_hint() {
    let path = scratch(
        "bad.toml",
        "name = \"x\"\n[topology]\nnodes = 10\nnodez = 3\n[run]\nduration = \"1s\"\n",
    );
    let out = sim().arg("run").arg(&path).output().unwrap();
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains(&format!("{}:4:1:", path.display())), "{err}");
    assert!(err.contains("nodez") && err.contains("hint:"), "{err}");
}

#[test]
fn bad_arguments_exit_2() {
    let path = scratch("ok-args.toml", SMALL);
    for args in [
        &["--duration", "10"][..],
        &["--seeds", "3..3"],
        &["--profile", "fast"],
    ] {
        let out = sim().arg("run").arg(&path).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
    }
}

#[test]
fn json_lines_per_seed_and_exit_0_when_everything_holds() {
    let path = scratch("ok.toml", &format!("{SMALL}[expect]\nconverged = true\n"));
    let out = sim()
        .arg("run")
        .arg(&path)
        .args(["--seeds", "1..3", "--json"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let stdout = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2);
    for (line, seed) in lines.iter().zip(1..) {
        let v: serde_json::Value = serde_json::from_str(line).unwrap();
        assert_eq!(v["seed"], seed);
        assert_eq!(v["crashes"], 1);
    }
}

#[test]
fn a_failed_expectation_exits_1_and_prints_the_replay_command() {
    let path = scratch(
        "strict.toml",
        &format!("{SMALL}[expect]\ndetection_p99_s_max = 0.001\n"),
    );
    let out = sim()
        .arg("run")
        .arg(&path)
        .args(["--seed", "7", "--nodes", "10"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("EXPECTATION FAILED: detection_p99_s"),
        "{stdout}"
    );
    let err = String::from_utf8_lossy(&out.stderr);
    let replay = format!("meshkit-sim run {} --seed 7 --nodes 10", path.display());
    assert!(err.contains(&replay), "{err}");
}

#[test]
fn a_sweep_tallies_every_seed_lists_missed_expectations_and_exits_0_while_safe() {
    let path = scratch(
        "sweep.toml",
        &format!("{SMALL}[expect]\ndetection_p99_s_max = 0.001\n"),
    );
    let jsonl = path.with_extension("jsonl");
    let out = sim()
        .arg("sweep")
        .arg(&path)
        .args(["--seeds", "1..7", "--jobs", "2", "--nodes", "10", "--jsonl"])
        .arg(&jsonl)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    // Missing a latency bound is counted, not fatal: no invariant broke.
    assert_eq!(out.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("| small | 6 | 0 | 0 | 0 | 0 | 6 |"),
        "{stdout}"
    );
    let replay = format!("meshkit-sim run {} --seed 1 --nodes 10", path.display());
    assert!(stdout.contains(&replay), "{stdout}");
    // Every seed's report, each seed once, identical to a `run` of that seed.
    let lines = std::fs::read_to_string(&jsonl).unwrap();
    let mut seeds: Vec<u64> = lines
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["seed"]
                .as_u64()
                .unwrap()
        })
        .collect();
    seeds.sort_unstable();
    assert_eq!(seeds, [1, 2, 3, 4, 5, 6]);
    let single = sim()
        .arg("run")
        .arg(&path)
        .args(["--seed", "4", "--nodes", "10", "--json"])
        .output()
        .unwrap();
    let single: serde_json::Value = serde_json::from_slice(&single.stdout).unwrap();
    let swept = lines
        .lines()
        .map(|l| serde_json::from_str::<serde_json::Value>(l).unwrap())
        .find(|v| v["seed"] == 4)
        .unwrap();
    assert_eq!(swept["trace_hash"], single["trace_hash"]);
}

/// `--compare` runs each seed again with another profile and prints both side by side; the
/// scenario's own profile decides the exit code. Without a scenario the tour runs compared with
/// the memberlist profile (too long for the default suite at its 1,000 nodes: `--nodes 12`).
#[test]
fn compare_prints_both_profiles_side_by_side() {
    let path = scratch(
        "compare.toml",
        &format!("{SMALL}[expect]\ndetection_p99_s_max = 10.0\n"),
    );
    let out = sim()
        .arg("run")
        .arg(&path)
        .args(["--seed", "3", "--compare", "memberlist"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("LAN PROFILE  MEMBERLIST PROFILE  EXPECTED"),
        "{text}"
    );
    assert!(text.contains("crash detection p99"), "{text}");
    assert!(text.contains("<= 10 s"), "{text}");

    let json = sim()
        .arg("run")
        .arg(&path)
        .args(["--seed", "3", "--compare", "memberlist", "--json"])
        .output()
        .unwrap();
    let lines: Vec<serde_json::Value> = String::from_utf8_lossy(&json.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).expect("a JSON line"))
        .collect();
    assert_eq!(lines.len(), 2);
    assert_eq!(
        (lines[0]["profile"].as_str(), lines[1]["profile"].as_str()),
        (Some("lan"), Some("memberlist"))
    );

    let tour = sim()
        .args(["run", "--nodes", "12", "--duration", "20s"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&tour.stdout);
    assert!(text.starts_with("What MeshKit does, in one run"), "{text}");
    assert!(text.contains("MEMBERLIST PROFILE"), "{text}");
}

/// `--dry-run` checks what a run checks before it starts (the scenario, the node count against
/// its selectors) and prints the plan, running nothing: `scripts/check-docs.sh` checks the long
/// documented commands this way.
#[test]
fn dry_run_checks_and_prints_the_plan_without_running() {
    let path = scratch("dry.toml", SMALL);
    let out = sim()
        .args(["run"])
        .arg(&path)
        .args(["--seeds", "1..4", "--nodes", "40", "--dry-run"])
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(
        text.contains("40 nodes, 20 virtual s, profile lan, seeds 1..4 (3 runs"),
        "{text}"
    );
    assert!(!text.contains("trace hash"), "nothing ran: {text}");
    let jsonl = path.with_file_name("dry.jsonl");
    let out = sim()
        .args(["sweep"])
        .arg(&path)
        .args(["--seeds", "1..1001", "--jsonl"])
        .arg(&jsonl)
        .arg("--dry-run")
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("(1000 runs"),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
    assert!(!jsonl.exists(), "a dry run writes no JSON lines");
    // A node count the scenario's selectors do not fit is refused, as a run would refuse it.
    let out = sim()
        .args(["run"])
        .arg(&path)
        .args(["--nodes", "1", "--dry-run"])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}
