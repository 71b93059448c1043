//! Records the git commit of the build for `/infoz` (`unknown` outside a git checkout).

use std::process::Command;

fn main() {
    let commit = Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty());
    if let Some(commit) = commit {
        println!("cargo:rustc-env=WEIR_GIT_COMMIT={commit}");
    }
    // Rebuild when HEAD moves; missing files are ignored by cargo.
    println!("cargo:rerun-if-changed=../.git/HEAD");
    println!("cargo:rerun-if-changed=../.git/refs/heads");
    // `sqlx::migrate!` embeds the migrations: a new file must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
}
