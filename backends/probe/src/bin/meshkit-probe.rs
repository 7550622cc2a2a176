//! `meshkit-probe`: the synthetic probe agent (`docs/probes.md`).

fn main() -> std::process::ExitCode {
    eprintln!("meshkit-probe: not built yet");
    std::process::ExitCode::FAILURE
}
