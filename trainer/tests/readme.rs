//! The README shows only figures a command printed: its figures table must be exactly what
//! `trainer::report::html::readme_table` makes of the committed `docs/summary.json` (the main job's
//! `report/summary.json`; the main job also writes the table as `report/readme-table.md`).

use std::path::Path;

#[test]
fn readme_figures_table_is_generated_from_the_committed_summary() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
    let summary: serde_json::Value =
        serde_json::from_slice(&std::fs::read(root.join("docs/summary.json")).unwrap()).unwrap();
    let table = trainer::report::html::readme_table(&summary);
    let readme = std::fs::read_to_string(root.join("README.md")).unwrap();
    assert!(
        readme.contains(&table),
        "README.md's figures table is not the one docs/summary.json gives. After the main job, \
         copy report/summary.json to docs/ and report/readme-table.md into README.md:\n{table}"
    );
}
