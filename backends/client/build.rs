//! Points `src/grpc` at the tonic client code that `meshkit-api`'s build script generated from
//! the contracts (one protobuf compilation for the workspace): that script announces its output
//! directory as `links` metadata, which cargo hands to this script as
//! `DEP_MESHKIT_API_GENERATED`.

fn main() {
    let Some(dir) = std::env::var_os("DEP_MESHKIT_API_GENERATED") else {
        println!(
            "cargo::error=meshkit-api announced no generated code (DEP_MESHKIT_API_GENERATED)"
        );
        return;
    };
    println!(
        "cargo::rustc-env=MESHKIT_API_GENERATED={}",
        dir.to_string_lossy()
    );
}
