//! `payrun --generate`: completion scripts and the man page, from the clap definitions.

use crate::support::payrun_in;
use std::io::Write;
use std::process::{Command, Stdio};

fn generate(kind: &str) -> String {
    let dir = tempfile::tempdir().unwrap();
    let out = payrun_in(dir.path(), &["--generate", kind]);
    assert_eq!(out.code, 0, "{kind}: {}", out.stderr);
    out.stdout
}

/// Feeds `text` to `program args` and returns whether it succeeded, with its stderr.
fn feed(program: &str, args: &[&str], text: &str) -> Option<(bool, String)> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .ok()?;
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    Some((
        out.status.success(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    ))
}

#[test]
fn completion_scripts_name_every_command_and_bash_parses_its_own() {
    for kind in [
        "complete-bash",
        "complete-zsh",
        "complete-fish",
        "complete-powershell",
    ] {
        let script = generate(kind);
        for cmd in [
            "validate",
            "plan",
            "run",
            "status",
            "reconcile",
            "report",
            "unlock",
        ] {
            assert!(script.contains(cmd), "{kind} lacks {cmd}");
        }
    }
    let (ok, err) = feed("bash", &["-n"], &generate("complete-bash")).expect("bash is present");
    assert!(ok, "bash -n refused the completion script: {err}");
}

#[test]
fn the_man_page_is_roff_and_renders() {
    let page = generate("man");
    assert!(page.contains(".TH payrun 1"), "{page}");
    for cmd in ["validate", "reconcile", "unlock"] {
        assert!(page.contains(cmd), "the man page lacks {cmd}");
    }
    // Rendered where groff is present (CI installs it): no error, no warning.
    if let Some((ok, err)) = feed("groff", &["-man", "-Tutf8", "-ww", "-z"], &page) {
        assert!(ok && err.trim().is_empty(), "groff: {err}");
    }
}

/// Without a command or `--generate`, payrun says what it needs and exits 2.
#[test]
fn nothing_to_do_is_said() {
    let dir = tempfile::tempdir().unwrap();
    let out = payrun_in(dir.path(), &["--quiet"]);
    assert_eq!(out.code, 2, "{}", out.stderr);
    assert!(out.stderr.contains("a command is needed"), "{}", out.stderr);
}
