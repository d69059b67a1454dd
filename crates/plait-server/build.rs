//! Rebuilds this crate when the web demo's bundle changes.
//!
//! `http.rs` embeds `web-demo/dist` with `include_dir!`, which on stable Rust does not tell
//! Cargo which files it read: without this script, `npm run build` followed by `cargo build`
//! would keep serving the old demo. A directory given to `rerun-if-changed` is scanned for any
//! modified file, so a new page or asset counts too.

fn main() {
    println!("cargo:rerun-if-changed=../../web-demo/dist");
}
