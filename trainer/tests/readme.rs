//! The README shows only figures a command printed: its figures table must be exactly what
//! `trainer::report::html::readme_table` makes of the committed `docs/summary.json` (the main job's
//! `report/summary.json`; the main job also writes the table as `report/readme-table.md`).

use std::path::Path;

#[test]
fn readme_figures_table_is_generated_from_the_committed_summary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("docs/summary.json")).unwrap()).unwrap();
    let table = trainer::report::html::readme_table(&summary).unwrap();
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&table),
        "README.md's figures table is not the one docs/summary.json gives. After the main job, \
         copy report/summary.json to docs/ and report/readme-table.md into README.md:\n{table}"
    );
}

/// A summary without one of the table's keys is an error that names it (it rendered as
/// "NaN %" or 0, which a README made from the same summary matched).
#[test]
fn a_missing_summary_key_is_an_error() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let full: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("docs/summary.json")).unwrap()).unwrap();
    for key in [
        "int8_accuracy",
        "instructions_per_inference",
        "firmware_peak_stack_bytes",
    ] {
        let mut s = full.clone();
        s.as_object_mut().unwrap().remove(key);
        let e = trainer::report::html::readme_table(&s)
            .unwrap_err()
            .to_string();
        assert!(e.contains(key), "{key}: {e}");
    }
}

/// The README's own-data example runs as written (in a fresh folder, the commands as pasted,
/// `cargo run --release -p trainer --` standing for this binary), and every output line the
/// README shows for it is one the commands print.
#[test]
fn own_data_example_runs_as_written() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    let block = readme
        .split("<!-- own-data example: start -->")
        .nth(1)
        .and_then(|r| r.split("<!-- own-data example: end -->").next())
        .expect("the README's own-data example markers");
    let prefix = "cargo run --release -p trainer -- ";
    let commands: Vec<&str> = block
        .lines()
        .filter_map(|l| l.strip_prefix(prefix))
        .collect();
    assert!(commands.len() >= 5, "{block}");
    let dir = std::env::temp_dir().join(format!("trainer-readme-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    let mut printed = String::new();
    for c in &commands {
        let out = std::process::Command::new(env!("CARGO_BIN_EXE_trainer"))
            .args(c.split_whitespace())
            .current_dir(&dir)
            .output()
            .unwrap();
        let (o, e) = (
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        assert!(out.status.success(), "{c}:\n{o}\n{e}");
        printed += &o;
        printed += &e;
    }
    let shown = block
        .split("```text")
        .nth(1)
        .and_then(|t| t.split("```").next())
        .expect("the example's output block");
    for line in shown.lines().filter(|l| !l.trim().is_empty()) {
        assert!(
            printed.lines().any(|p| p == line),
            "the README shows a line the commands do not print:\n{line}\n\nthey printed:\n{printed}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}
