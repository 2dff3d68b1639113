//! The trainer's layout, checked from its sources: dependencies between modules point one way
//! (commands -> report -> detect / deploy -> train -> nn / data, with io and util below all),
//! there are no import cycles, no file's code (tests aside) runs much past 600 lines, and only
//! the commands (and `main.rs`) know clap. The graph
//! is read by `runtime/tests/support/layout_graph.rs` (shared with the runtime's layout test).

#[path = "../../runtime/tests/support/layout_graph.rs"]
mod layout_graph;

use layout_graph::{code, crate_paths, crate_paths_in, find_cycle, graph_of, sources, Graph};
use std::path::Path;

fn graph() -> Graph {
    graph_of(&Path::new(env!("CARGO_MANIFEST_DIR")).join("src"))
}

fn layer(module: &str) -> usize {
    match module.split("::").next().unwrap() {
        "commands" => 6,
        "report" => 5,
        "detect" | "deploy" => 4,
        "train" => 3,
        "nn" | "data" => 2,
        "io" | "util" => 1,
        other => panic!("module {other} has no place in the layering: add it to this test"),
    }
}

#[test]
fn dependencies_point_one_way() {
    let g = graph();
    let mut upward = Vec::new();
    for (m, ds) in &g.deps {
        for d in ds {
            if layer(d) > layer(m) {
                upward.push(format!("{m} -> {d}"));
            }
        }
    }
    none_of(&upward, "dependencies against the layering");
}

/// Fails naming `found` if there is any.
fn none_of<T: std::fmt::Debug>(found: &[T], what: &str) {
    assert!(found.is_empty(), "{what}: {found:?}");
}

/// The command line is the commands' business: no file outside `commands/` (and `main.rs`)
/// mentions clap in its code, so the library is callable with plain structs and parameters.
#[test]
fn only_the_commands_know_clap() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut found = Vec::new();
    for f in &files {
        let rel = f.strip_prefix(&src).unwrap();
        if rel.starts_with("commands") || rel == Path::new("main.rs") {
            continue;
        }
        let text = std::fs::read_to_string(f).unwrap();
        for (n, l) in text.lines().enumerate() {
            if !l.trim_start().starts_with("//") && l.contains("clap") {
                found.push(format!("{}:{}: {}", rel.display(), n + 1, l.trim()));
            }
        }
    }
    none_of(&found, "clap outside commands/ and main.rs");
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
fn no_file_runs_much_past_600_lines() {
    let g = graph();
    let long: Vec<_> = g.lines.iter().filter(|(_, &n)| n > 650).collect();
    none_of(&long, "files over 650 lines of code (tests aside)");
}

/// The checker sees a dependency where there is one (else the tests above prove nothing).
#[test]
fn the_checker_sees_dependencies() {
    let g = graph();
    assert!(
        g.deps["train"].contains("nn::model"),
        "{:?}",
        g.deps["train"]
    );
    assert!(g.deps["commands"].contains("commands::train"));
    assert!(g.deps["commands::demo"]
        .iter()
        .any(|d| d.starts_with("report")));
    assert_eq!(
        crate_paths(&["use crate::a::b::{C, D}; x(crate::e);"]),
        ["a::b", "a::b", "e"]
    );
    // Grouped imports, `super::` and `self::` from a module's place.
    assert_eq!(
        crate_paths_in(
            "nn::autograd::ops_conv",
            &["use crate::{data, nn::model::X};"]
        ),
        ["data", "nn::model"]
    );
    assert_eq!(
        crate_paths_in(
            "nn::autograd::ops_conv",
            &["use super::ops_conv_direct::f; super::super::init::g(); self::h::i();"]
        ),
        [
            "nn::autograd::ops_conv_direct::f",
            "nn::init::g",
            "nn::autograd::ops_conv::h::i"
        ]
    );
    // The code after a test module is read; the test module is not.
    let text = "use crate::a;\n#[cfg(test)]\nmod tests {\n    use crate::b;\n}\nuse crate::c;\n";
    assert_eq!(crate_paths(&code(text)), ["a", "c"]);
    let text = "#[cfg(test)]\nuse crate::b;\nfn f() { crate::c::g() }\n";
    assert_eq!(crate_paths(&code(text)), ["c::g"]);
}
