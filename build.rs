//! Build step: make sure the official socket.io browser client is installed under
//! `web/node_modules`, so `src/http/client_bundle.rs` can embed it with `include_bytes!`.
//!
//! The bundle is third-party code, so it is never committed: npm installs it from the
//! committed `web/package-lock.json` (`npm ci`), or from `web/package.json` when no lock exists.

use std::path::Path;
use std::process::Command;

/// The files the binary embeds, relative to `web/node_modules/socket.io-client/dist/`.
const BUNDLE_FILES: [&str; 4] = [
    "socket.io.js",
    "socket.io.js.map",
    "socket.io.min.js",
    "socket.io.min.js.map",
];

fn main() {
    let manifest_dir = std::env::var("CARGO_MANIFEST_DIR").unwrap_or_else(|_| ".".to_owned());
    let web = Path::new(&manifest_dir).join("web");
    let dist = web.join("node_modules/socket.io-client/dist");

    println!("cargo:rerun-if-changed=build.rs");
    println!("cargo:rerun-if-changed=web/package.json");
    println!("cargo:rerun-if-changed=web/package-lock.json");
    for file in BUNDLE_FILES {
        println!("cargo:rerun-if-changed=web/node_modules/socket.io-client/dist/{file}");
    }

    if BUNDLE_FILES.iter().all(|file| dist.join(file).is_file()) {
        return;
    }

    let install = if web.join("package-lock.json").is_file() {
        "ci"
    } else {
        "install"
    };
    let status = Command::new("npm")
        .args([install, "--no-audit", "--no-fund", "--prefix"])
        .arg(&web)
        .status();
    match status {
        Ok(status) if status.success() => {}
        Ok(status) => panic!(
            "`npm {install} --prefix web` failed ({status}); chinwag embeds the socket.io \
             browser client from npm, so the build needs Node.js with npm and access to the \
             npm registry"
        ),
        Err(err) => panic!(
            "could not run npm ({err}); chinwag embeds the socket.io browser client from npm, \
             so the build needs Node.js with npm on PATH (e.g. `apt-get install nodejs npm`)"
        ),
    }
    for file in BUNDLE_FILES {
        if !dist.join(file).is_file() {
            panic!("npm finished but {} is missing", dist.join(file).display());
        }
    }
}
