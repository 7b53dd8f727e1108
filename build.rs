//! Records the commit the binary is built from, for `--version`.
//!
//! `PSI_GIT_COMMIT` wins when set (a build without `.git`, e.g. `docker build
//! --build-arg`); otherwise `git rev-parse`; `unknown` when neither is there.

use std::process::Command;

fn main() {
    println!("cargo:rerun-if-env-changed=PSI_GIT_COMMIT");
    let commit = std::env::var("PSI_GIT_COMMIT")
        .ok()
        .filter(|c| !c.trim().is_empty())
        .or_else(|| git(&["rev-parse", "--short=12", "HEAD"]))
        .unwrap_or_else(|| "unknown".to_string());
    // Rebuild when HEAD moves: HEAD itself (checkout), the branch it names (commit), and
    // packed-refs (gc). `--git-path` resolves worktrees to the right files.
    let mut watched = vec!["HEAD".to_string(), "packed-refs".to_string()];
    watched.extend(git(&["symbolic-ref", "-q", "HEAD"]));
    for name in watched {
        if let Some(path) = git(&["rev-parse", "--git-path", &name]) {
            println!("cargo:rerun-if-changed={path}");
        }
    }
    println!("cargo:rustc-env=PSI_GIT_COMMIT={commit}");
}

fn git(args: &[&str]) -> Option<String> {
    let out = Command::new("git").args(args).output().ok()?;
    let text = String::from_utf8(out.stdout).ok()?.trim().to_string();
    (out.status.success() && !text.is_empty()).then_some(text)
}
