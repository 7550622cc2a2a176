//! Every crate's map lists every public module: the `//!` doc of each `lib.rs` below links each
//! `pub mod` it declares (`[`name`]` or a path into it, `[`name::Item`]`), so a module added
//! without a line in the map fails here (docs/style.md rule 15: the crate doc is a map).

use std::path::Path;

/// The crates whose maps are held to their modules, relative to the workspace root.
const CRATES: [&str; 9] = [
    "mesh",
    "sim",
    "backends/api",
    "backends/net",
    "backends/runtime",
    "backends/control",
    "backends/client",
    "backends/node",
    "backends/testkit",
];

/// The public modules `lib.rs` declares (`pub mod name;` or `pub mod name {`), in order.
fn public_modules(lib: &str) -> Vec<&str> {
    lib.lines()
        .filter_map(|line| line.trim_start().strip_prefix("pub mod "))
        .map(|rest| rest.trim_end_matches([';', '{', ' ']))
        .collect()
}

/// The crate doc: the `//!` lines, without their marker.
fn crate_doc(lib: &str) -> String {
    lib.lines()
        .filter_map(|line| line.strip_prefix("//!"))
        .collect::<Vec<_>>()
        .join("\n")
}

fn unmapped(lib: &str) -> Vec<String> {
    let doc = crate_doc(lib);
    public_modules(lib)
        .into_iter()
        .filter(|m| !doc.contains(&format!("[`{m}`]")) && !doc.contains(&format!("[`{m}::")))
        .map(str::to_owned)
        .collect()
}

#[test]
fn every_public_module_is_on_its_crate_map() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let mut missing = Vec::new();
    for krate in CRATES {
        let path = root.join(krate).join("src/lib.rs");
        let lib = std::fs::read_to_string(&path)
            .unwrap_or_else(|e| panic!("reading {}: {e}", path.display()));
        for module in unmapped(&lib) {
            missing.push(format!(
                "{krate}/src/lib.rs: `pub mod {module}` is not on the map"
            ));
        }
    }
    assert!(missing.is_empty(), "{}", missing.join("\n"));
}

/// The check itself: a module left off the map is found, one on it is not.
#[test]
fn a_module_left_off_the_map_is_found() {
    let lib = "//! * [`listed`]: here.\n//! * [`pathed::Item`]: here too.\n\n\
               pub mod listed;\npub mod pathed;\npub mod forgotten;\nmod private;\n";
    assert_eq!(unmapped(lib), ["forgotten"]);
}
