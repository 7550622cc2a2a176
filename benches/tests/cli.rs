//! The `meshkit-benches` program's arguments: `--dry-run` checks them and runs nothing (the docs
//! checker, `scripts/check-docs.sh`, checks the documented benchmark commands this way); a bad
//! argument is refused before anything runs.

use std::process::Command;

fn benches(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meshkit-benches"))
        .args(args)
        .output()
        .expect("meshkit-benches runs")
}

#[test]
fn dry_run_prints_the_plan_and_runs_nothing() {
    let out = benches(&[
        "--nodes",
        "1000,10000",
        "--seeds",
        "2",
        "--loss-hours",
        "24",
        "--dry-run",
    ]);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(text.contains("[1000, 10000] nodes"), "{text}");
    assert!(text.contains("nothing ran"), "{text}");
    assert!(!text.contains("# MeshKit benchmark tables"), "{text}");
}

#[test]
fn a_bad_section_is_refused() {
    let out = benches(&["--sections", "latency", "--dry-run"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("latency"),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}
