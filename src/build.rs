// Stamps the git revision into `dealsync --version`; "unknown" outside a checkout (e.g. a source tarball).
#![allow(clippy::disallowed_methods)] // a build script reads what cargo and the container build pass in
fn main() {
    // A container build has no .git: it passes the revision in.
    if let Ok(rev) = std::env::var("DEALSYNC_GIT_REV") {
        if !rev.trim().is_empty() {
            println!("cargo:rustc-env=DEALSYNC_GIT_REV={}", rev.trim());
            println!("cargo:rerun-if-env-changed=DEALSYNC_GIT_REV");
            return;
        }
    }
    let rev = std::process::Command::new("git")
        .args(["rev-parse", "--short=12", "HEAD"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .and_then(|o| String::from_utf8(o.stdout).ok())
        .map(|s| s.trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into());
    println!("cargo:rustc-env=DEALSYNC_GIT_REV={rev}");
    println!("cargo:rerun-if-changed=.git/HEAD");
    println!("cargo:rerun-if-changed=.git/refs");
    println!("cargo:rerun-if-env-changed=DEALSYNC_GIT_REV");
}
