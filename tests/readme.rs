//! The README, as a new user reads it: a crate outside this workspace whose only dependency is
//! `redis-retry` compiles the README's repository example and its production-connection
//! recipe, naming Redis through `redis_retry::redis`.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

/// The body of the first fenced block in `readme` that opens with `fence` and holds `marker`.
fn block<'a>(readme: &'a str, fence: &str, marker: &str) -> &'a str {
    let mut rest = readme;
    while let Some(start) = rest.find(fence) {
        let body = &rest[start + fence.len()..];
        let end = body.find("\n```").expect("a fenced block ends");
        if body[..end].contains(marker) {
            return &body[..end];
        }
        rest = &body[end..];
    }
    panic!("README.md has no {fence} block holding {marker:?}")
}

/// The production recipe is a fragment (`?` outside a function): its `use` lines stay at the
/// top, the rest becomes the body of an async function.
fn as_function(fragment: &str) -> String {
    let (uses, body): (Vec<&str>, Vec<&str>) = fragment.lines().partition(|l| l.starts_with("use "));
    format!(
        "{}\n\npub async fn production_connection() -> redis_retry::redis::RedisResult<()> {{\n{}\n    let _ = redis;\n    Ok(())\n}}\n",
        uses.join("\n"),
        body.join("\n")
    )
}

/// The target directory this test was built in, so the user's crate reuses what the
/// workspace compiled.
fn shared_target_dir() -> PathBuf {
    let exe = std::env::current_exe().expect("test executable");
    exe.ancestors().nth(3).expect("target/<profile>/deps/<exe>").to_path_buf()
}

fn write(dir: &Path, name: &str, text: &str) {
    let path = dir.join(name);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::write(path, text).unwrap();
}

#[test]
fn a_crate_outside_the_workspace_depending_only_on_redis_retry_compiles_the_readme_examples() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let repository = block(&readme, "```rust\n", "struct UserRepository");
    let recipe = block(&readme, "```rust,ignore\n", "RetryConnection::builder");
    assert!(repository.contains("redis_retry::redis"), "the README names redis through redis_retry::redis");

    let dir = std::env::temp_dir().join(support::unique("readme-user"));
    write(
        &dir,
        "Cargo.toml",
        &format!(
            "[package]\nname = \"readme-user\"\nversion = \"0.0.0\"\nedition = \"2021\"\npublish = false\n\n\
             [dependencies]\nredis-retry = {{ path = {:?} }}\n\n\
             # Not a member of any workspace above the temporary directory.\n[workspace]\n",
            root.display().to_string()
        ),
    );
    // The workspace's versions, so the build reuses its compiled dependencies.
    std::fs::copy(root.join("Cargo.lock"), dir.join("Cargo.lock")).unwrap();
    write(
        &dir,
        "src/lib.rs",
        &format!("#![allow(dead_code)]\n\n{repository}\n\nmod recipe {{\n{}\n}}\n", as_function(recipe)),
    );

    // `cargo test` holds the lock on its own target directory while tests run; nextest does
    // not. Under `cargo test` the crate builds in a directory of its own, as trybuild does.
    let target = match std::env::var_os("NEXTEST_RUN_ID") {
        Some(_) => shared_target_dir(),
        None => shared_target_dir().join("tests").join("readme-user"),
    };
    let out = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["build", "--offline", "--quiet", "--lib"])
        .current_dir(&dir)
        .env("CARGO_TARGET_DIR", &target)
        .output()
        .expect("run cargo");
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "the README example does not compile outside the workspace:\n{stderr}");
    assert!(!stderr.contains("warning"), "the README example compiles with warnings:\n{stderr}");
    let tree = Command::new(std::env::var("CARGO").unwrap_or_else(|_| "cargo".into()))
        .args(["tree", "--offline", "--depth", "1", "-e", "normal", "--prefix", "none"])
        .current_dir(&dir)
        .output()
        .expect("run cargo tree");
    let tree = String::from_utf8_lossy(&tree.stdout);
    let direct: Vec<&str> = tree.lines().skip(1).map(|l| l.split(' ').next().unwrap_or(l)).collect();
    assert_eq!(direct, ["redis-retry"], "the user's crate depends on redis-retry alone");
    let _ = std::fs::remove_dir_all(&dir);
}
