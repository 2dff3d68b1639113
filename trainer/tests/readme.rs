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
