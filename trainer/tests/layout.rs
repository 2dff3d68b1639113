//! The trainer's layout, checked from its sources: dependencies between modules point one way
//! (cli -> report -> detect / deploy -> train -> nn / data, with io and util below all), there
//! are no import cycles, and no file's code (tests aside) runs much past 600 lines.
//!
//! A module's dependencies are the `crate::...` paths in its code; comments (doc links) and
//! everything from its first `#[cfg(test)]` on (test modules may reach anywhere) are skipped.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.is_dir() {
            sources(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// `src/a/b.rs` -> `a::b`, `src/a/mod.rs` -> `a`.
fn module_name(src: &Path, file: &Path) -> String {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts.join("::")
}

/// The code before the first `#[cfg(test)]`, without comment lines.
fn code(text: &str) -> Vec<&str> {
    text.lines()
        .take_while(|l| !l.trim_start().starts_with("#[cfg(test)]"))
        .filter(|l| !l.trim_start().starts_with("//"))
        .collect()
}

/// The `a::b::c` paths after each `crate::`.
fn crate_paths(lines: &[&str]) -> Vec<String> {
    let mut out = Vec::new();
    for l in lines {
        let mut rest = *l;
        while let Some(i) = rest.find("crate::") {
            rest = &rest[i + "crate::".len()..];
            let end = rest
                .find(|c: char| {
                    !(c.is_ascii_lowercase() || c == '_' || c == ':' || c.is_ascii_digit())
                })
                .unwrap_or(rest.len());
            out.push(rest[..end].trim_end_matches(':').to_string());
        }
    }
    out
}

fn layer(module: &str) -> usize {
    match module.split("::").next().unwrap() {
        "cli" => 6,
        "report" => 5,
        "detect" | "deploy" => 4,
        "train" => 3,
        "nn" | "data" => 2,
        "io" | "util" => 1,
        other => panic!("module {other} has no place in the layering: add it to this test"),
    }
}

struct Graph {
    deps: BTreeMap<String, BTreeSet<String>>,
    lines: BTreeMap<String, usize>,
}

fn graph() -> Graph {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut texts = BTreeMap::new();
    for f in &files {
        let m = module_name(&src, f);
        if m != "lib" && m != "main" {
            texts.insert(m, std::fs::read_to_string(f).unwrap());
        }
    }
    let names: BTreeSet<String> = texts.keys().cloned().collect();
    let mut deps = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for (m, text) in &texts {
        let c = code(text);
        lines.insert(m.clone(), c.len());
        let mut d = BTreeSet::new();
        for p in crate_paths(&c) {
            // The longest prefix of the path that is a module.
            let parts: Vec<&str> = p.split("::").collect();
            if let Some(t) = (1..=parts.len())
                .rev()
                .map(|k| parts[..k].join("::"))
                .find(|c| names.contains(c))
            {
                if &t != m {
                    d.insert(t);
                }
            }
        }
        deps.insert(m.clone(), d);
    }
    Graph { deps, lines }
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

#[test]
fn no_import_cycles() {
    let g = graph();
    // Depth-first search for a back edge.
    fn visit(
        m: &str,
        g: &Graph,
        state: &mut BTreeMap<String, u8>,
        stack: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(m.into(), 1);
        stack.push(m.into());
        for d in g.deps.get(m).into_iter().flatten() {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = stack.iter().position(|s| s == d).unwrap_or(0);
                    let mut cycle = stack[at..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(d, g, state, stack) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        stack.pop();
        state.insert(m.into(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in g.deps.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0 {
            let cycle = visit(m, &g, &mut state, &mut Vec::new());
            assert!(
                cycle.is_none(),
                "import cycle: {}",
                cycle.unwrap().join(" -> ")
            );
        }
    }
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
    assert!(g.deps["cli"].iter().any(|d| d.starts_with("report")));
    assert_eq!(
        crate_paths(&["use crate::a::b::{C, D}; x(crate::e);"]),
        ["a::b", "e"]
    );
}
