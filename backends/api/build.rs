//! Generates the gRPC code of the control API from the contracts in `proto/`: `protox` (a protobuf
//! compiler written in Rust, so no `protoc` is needed) parses and checks the files, and
//! `tonic-prost-build` writes the Rust.
//!
//! Three outputs, so that each part can live where it belongs and nothing drags in more than
//! it uses:
//!
//! * `$OUT_DIR/messages/`: the prost messages alone (`grpc::proto`, `grpc::health`); they need
//!   only `prost`, and are what this crate, which depends on no server, holds.
//! * `$OUT_DIR/client/`: the tonic clients, over the messages above (`extern_path`), which
//!   `meshkit-client` includes.
//! * `$OUT_DIR/server/`: the tonic server traits and their dispatch, over the same messages,
//!   which `meshkit-control` includes.
//! * `$OUT_DIR/methods.rs`: the path of every method, which the authorization table must list.
//!
//! The two crates find `$OUT_DIR` through the `links` metadata this script prints
//! (`DEP_MESHKIT_API_GENERATED` in their build scripts), so the contracts are compiled once.
//!
//! A mistake in a `.proto` file fails the build with the file, line, column and what is wrong.

use std::path::{Path, PathBuf};
use std::process::ExitCode;

/// The contracts, relative to [`INCLUDE`].
const PROTOS: [&str; 2] = ["control.proto", "grpc/health/v1/health.proto"];
/// The import root of the contracts.
const INCLUDE: &str = "proto";

/// Where the generated clients and servers, included by other crates, refer to the messages
/// (the modules of this crate that include `messages/`).
const EXTERN: [(&str, &str); 2] = [
    (".meshkit.control.v1", "::meshkit_api::grpc::proto"),
    (".grpc.health.v1", "::meshkit_api::grpc::health"),
];

fn main() -> ExitCode {
    println!("cargo::rerun-if-changed={INCLUDE}");
    let files = match protox::compile(PROTOS, [INCLUDE]) {
        Ok(files) => files,
        Err(error) => {
            // `{:?}` is protox's `file:line:column: message`.
            println!("cargo::error=invalid protobuf contract in {INCLUDE}/: {error:?}");
            return ExitCode::FAILURE;
        }
    };
    let out = PathBuf::from(std::env::var_os("OUT_DIR").expect("cargo sets OUT_DIR"));
    let messages = tonic_prost_build::configure()
        .build_client(false)
        .build_server(false)
        // Maps in a stable order: the JSON twins of these messages list keys sorted too.
        .btree_map(".");
    let with_extern = |mut builder: tonic_prost_build::Builder| {
        for (proto, rust) in EXTERN {
            builder = builder.extern_path(proto, rust);
        }
        builder.build_transport(false)
    };
    let client = with_extern(tonic_prost_build::configure().build_server(false));
    let server = with_extern(tonic_prost_build::configure().build_client(false));
    for (name, builder) in [
        ("messages", messages),
        ("client", client),
        ("server", server),
    ] {
        if let Err(error) = generate(builder, &files, &out.join(name)) {
            println!("cargo::error=generating the gRPC {name} from {INCLUDE}/: {error}");
            return ExitCode::FAILURE;
        }
    }
    if let Err(error) = std::fs::write(out.join("methods.rs"), methods(&files)) {
        println!("cargo::error=writing the gRPC method list: {error}");
        return ExitCode::FAILURE;
    }
    // Read by the build scripts of the crates that include `client/` and `server/`.
    println!("cargo::metadata=generated={}", out.display());
    ExitCode::SUCCESS
}

/// `METHODS`: the HTTP path of every method the contracts declare, `/{package}.{service}/{rpc}`
/// (what the authorization table must list).
fn methods(files: &tonic_prost_build::FileDescriptorSet) -> String {
    let mut paths = Vec::new();
    for file in &files.file {
        for service in &file.service {
            for method in &service.method {
                paths.push(format!(
                    "/{}.{}/{}",
                    file.package(),
                    service.name(),
                    method.name()
                ));
            }
        }
    }
    let list: String = paths.iter().map(|p| format!("    {p:?},\n")).collect();
    format!(
        "/// The path of every method `proto/` declares, `/{{package}}.{{service}}/{{method}}`.\n\
         pub const METHODS: [&str; {}] = [\n{list}];\n",
        paths.len()
    )
}

fn generate(
    builder: tonic_prost_build::Builder,
    files: &tonic_prost_build::FileDescriptorSet,
    dir: &Path,
) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    builder.out_dir(dir).compile_fds(files.clone())
}
