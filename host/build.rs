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
    // Rebuild when HEAD moves. Paths from git, so that a worktree (whose `.git` is a file)
    // works too: a missing path would make cargo rerun this script, and rebuild the crate,
    // on every build.
    for path in ["HEAD", "refs/heads"] {
        if let Some(path) = git_path(path) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    // `sqlx::migrate!` embeds the migrations: a new file must rebuild the crate.
    println!("cargo:rerun-if-changed=migrations");
}

/// Where git keeps `path` (`HEAD` is per worktree, `refs/heads` shared), if this is a checkout.
fn git_path(path: &str) -> Option<String> {
    Command::new("git")
        .args(["rev-parse", "--path-format=absolute", "--git-path", path])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_owned())
        .filter(|s| !s.is_empty() && std::path::Path::new(s).exists())
}
