//! `sqlx::migrate!` embeds the migrations at compile time, but cargo does not know they are
//! inputs: without this, a new migration file is not built in until a source file changes.
fn main() {
    println!("cargo:rerun-if-changed=../../migrations");
}
