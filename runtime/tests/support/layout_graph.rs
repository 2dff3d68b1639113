//! A crate's module graph read from its sources, for the layout tests of the runtime and the
//! trainer (each includes this file).
//!
//! A module's dependencies are the `crate::`, `super::` and `self::` paths in its code (grouped
//! `use crate::{a, b::c}` expanded); comments (doc links) and the items under a
//! `#[cfg(test)]` (test modules may reach anywhere) are skipped, and nothing else: the whole
//! file is read, whatever follows a test module. A parent's `pub use child::x` re-exports are
//! not paths of this kind: a `mod.rs` that re-exports its children is their facade, not a
//! dependency.
#![allow(dead_code)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

pub fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
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
pub fn module_name(src: &Path, file: &Path) -> String {
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

/// The code lines without comment lines and without the items under a `#[cfg(test)]` (a
/// one-line item, or a braced one up to its closing brace); everything else, to the end.
pub fn code(text: &str) -> Vec<&str> {
    let mut out = Vec::new();
    let mut lines = text.lines().peekable();
    while let Some(l) = lines.next() {
        let t = l.trim_start();
        if t.starts_with("//") {
            continue;
        }
        if !t.starts_with("#[cfg(test)]") {
            out.push(l);
            continue;
        }
        // Skip the item: further attributes, then lines until its braces balance (or a `;`
        // ends a one-line item).
        let mut depth = 0i32;
        let mut opened = false;
        for l in lines.by_ref() {
            let t = l.trim_start();
            if t.starts_with("#[") && !opened {
                continue;
            }
            for c in l.chars() {
                match c {
                    '{' => {
                        depth += 1;
                        opened = true;
                    }
                    '}' => depth -= 1,
                    _ => {}
                }
            }
            if (opened && depth <= 0) || (!opened && t.ends_with(';')) {
                break;
            }
        }
    }
    out
}

/// The path characters at the start of `s` (`a::b::c`, stopping at a type or a brace).
pub fn path_prefix(s: &str) -> &str {
    let end = s
        .find(|c: char| !(c.is_ascii_lowercase() || c == '_' || c == ':' || c.is_ascii_digit()))
        .unwrap_or(s.len());
    &s[..end]
}

/// The module paths (from the crate root, `a::b::c`) that `lines` of module `module` name
/// with `crate::`, `super::` or `self::`; `use x::{a, b::c}` gives `x::a` and `x::b::c`.
pub fn crate_paths_in(module: &str, lines: &[&str]) -> Vec<String> {
    let text = lines.join("\n");
    let mut out = Vec::new();
    let parent = |m: &str| {
        m.rsplit_once("::")
            .map_or(String::new(), |(p, _)| p.to_string())
    };
    let bytes = text.as_bytes();
    let mut i = 0;
    while i < text.len() {
        let at_word = i == 0 || !(bytes[i - 1].is_ascii_alphanumeric() || bytes[i - 1] == b'_');
        let rest = &text[i..];
        let (base, skip) = if at_word && rest.starts_with("crate::") {
            (String::new(), "crate::".len())
        } else if at_word && rest.starts_with("self::") {
            (module.to_string(), "self::".len())
        } else if at_word && rest.starts_with("super::") {
            let mut b = parent(module);
            let mut k = "super::".len();
            while rest[k..].starts_with("super::") {
                b = parent(&b);
                k += "super::".len();
            }
            (b, k)
        } else {
            i += rest.chars().next().map_or(1, char::len_utf8);
            continue;
        };
        let tail = &rest[skip..];
        let p = path_prefix(tail);
        let join = |a: &str, b: &str| {
            let b = b.trim_end_matches(':');
            match (a.is_empty(), b.is_empty()) {
                (true, _) => b.to_string(),
                (_, true) => a.to_string(),
                _ => format!("{a}::{b}"),
            }
        };
        let head = join(&base, p);
        if (p.is_empty() || p.ends_with("::")) && tail[p.len()..].starts_with('{') {
            // A group: each comma-separated entry (one level of nesting is enough here).
            let body = &tail[p.len() + 1..];
            let close = body.find('}').unwrap_or(body.len());
            for item in body[..close].split([',', '{']) {
                let item = path_prefix(item.trim());
                out.push(join(&head, item));
            }
        } else {
            out.push(head);
        }
        i += skip + p.len().max(1);
    }
    out
}

/// [`crate_paths_in`] for the crate root (the old checker's view: `crate::` paths only).
pub fn crate_paths(lines: &[&str]) -> Vec<String> {
    crate_paths_in("", lines)
}

pub struct Graph {
    pub deps: BTreeMap<String, BTreeSet<String>>,
    pub lines: BTreeMap<String, usize>,
}

/// The module graph of the crate whose sources are in `src` (its root files left out).
pub fn graph_of(src: &Path) -> Graph {
    let mut files = Vec::new();
    sources(src, &mut files);
    let mut texts = BTreeMap::new();
    for f in &files {
        let m = module_name(src, f);
        if m != "lib" && m != "main" {
            texts.insert(m, std::fs::read_to_string(f).unwrap());
        }
    }
    let names: BTreeSet<String> = texts.keys().cloned().collect();
    let reexports = root_reexports(src);
    let mut deps = BTreeMap::new();
    let mut lines = BTreeMap::new();
    for (m, text) in &texts {
        let c = code(text);
        lines.insert(m.clone(), c.len());
        let mut d = BTreeSet::new();
        for p in crate_paths_in(m, &c) {
            // An item the crate root re-exports (`crate::Model`) is its module's.
            let first = p.split("::").next().unwrap_or_default();
            let p = match reexports.get(first) {
                Some(module) => format!("{module}::{p}"),
                None => p,
            };
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

/// The items `lib.rs` re-exports (`pub use a::b::{X, Y};`), each with its module (`a::b`).
pub fn root_reexports(src: &Path) -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(src.join("lib.rs")).unwrap_or_default();
    let text = code(&text).join(" ");
    let mut out = BTreeMap::new();
    for stmt in text.split("pub use ").skip(1) {
        let stmt = stmt.split(';').next().unwrap_or_default().trim();
        let (module, items) = match stmt.split_once("::{") {
            Some((m, rest)) => (m.to_string(), rest.trim_end_matches('}').to_string()),
            None => match stmt.rsplit_once("::") {
                Some((m, item)) => (m.to_string(), item.to_string()),
                None => continue,
            },
        };
        for item in items.split(',') {
            let item = item.split_whitespace().last().unwrap_or_default();
            if !item.is_empty() {
                out.insert(item.to_string(), module.clone());
            }
        }
    }
    out
}

/// An import cycle of `g`, if there is one (depth-first search for a back edge).
pub fn find_cycle(g: &Graph) -> Option<Vec<String>> {
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
            if let Some(c) = visit(m, g, &mut state, &mut Vec::new()) {
                return Some(c);
            }
        }
    }
    None
}
