//! The runtime's layout, checked from its sources: no import cycles; dependencies point one way
//! (quant / error / vectors -> format -> kernels, planner, detect -> model (the loader) ->
//! interpreter, writer), so the kernels never reach the loader; no file's code (tests aside)
//! runs past 650 lines. The graph is read by `support/layout_graph.rs` (shared with the
//! trainer's layout test).

#[path = "support/layout_graph.rs"]
mod layout_graph;

use layout_graph::{find_cycle, graph_of, Graph};
use std::path::Path;

fn graph() -> Graph {
    graph_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

fn layer(module: &str) -> usize {
    match module.split("::").next().unwrap() {
        "quant" | "error" | "vectors" => 0,
        "format" => 1,
        "kernels" | "planner" | "detect" => 2,
        "model" => 3,
        "interpreter" | "writer" | "reference_model" => 4,
        other => panic!("module {other} has no place in the layering: add it to this test"),
    }
}

#[test]
fn no_import_cycles() {
    let cycle = find_cycle(&graph());
    assert!(
        cycle.is_none(),
        "import cycle: {}",
        cycle.unwrap().join(" -> ")
    );
}

#[test]
fn dependencies_point_one_way_and_kernels_never_reach_the_loader() {
    let g = graph();
    let mut wrong = Vec::new();
    for (m, ds) in &g.deps {
        for d in ds {
            let top = |s: &str| s.split("::").next().unwrap().to_string();
            if layer(d) > layer(m) || (layer(d) == layer(m) && top(d) != top(m)) {
                wrong.push(format!("{m} -> {d}"));
            }
        }
    }
    assert!(
        wrong.is_empty(),
        "dependencies against the layering: {wrong:?}"
    );
}

#[test]
fn no_file_runs_past_650_lines() {
    let g = graph();
    let long: Vec<_> = g.lines.iter().filter(|(_, &n)| n > 650).collect();
    assert!(
        long.is_empty(),
        "files over 650 lines of code (tests aside): {long:?}"
    );
}

/// The checker sees the runtime's dependencies (else the tests above prove nothing).
#[test]
fn the_checker_sees_dependencies() {
    let g = graph();
    assert!(
        g.deps["model"].contains("kernels::prepare"),
        "{:?}",
        g.deps["model"]
    );
    assert!(
        g.deps["kernels::step"].contains("kernels::conv"),
        "{:?}",
        g.deps["kernels::step"]
    );
    assert!(
        g.deps["kernels::conv"].contains("format"),
        "{:?}",
        g.deps["kernels::conv"]
    );
    assert!(g.lines["kernels::conv"] > 100);
    // An item the root re-exports counts as its module's (`crate::Model` is `model`'s).
    let re = layout_graph::root_reexports(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"));
    assert_eq!(re.get("Model").map(String::as_str), Some("model"));
    assert_eq!(re.get("Step").map(String::as_str), Some("kernels"));
    assert!(
        g.deps["reference_model"].contains("model"),
        "{:?}",
        g.deps["reference_model"]
    );
}

/// The firmware (its own crate, built for Cortex-M only) is read the same way: no import
/// cycles and no long files among its modules.
#[test]
fn the_firmware_has_no_import_cycles_or_long_files() {
    let g = graph_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("../firmware/src"));
    assert!(
        g.deps.contains_key("stack") && g.deps["stack"].contains("semihost"),
        "{:?}",
        g.deps
    );
    let cycle = find_cycle(&g);
    assert!(
        cycle.is_none(),
        "import cycle: {}",
        cycle.unwrap().join(" -> ")
    );
    let long: Vec<_> = g.lines.iter().filter(|(_, &n)| n > 650).collect();
    assert!(long.is_empty(), "files over 650 lines of code: {long:?}");
}
