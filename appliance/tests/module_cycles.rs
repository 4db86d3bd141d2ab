//! The appliance's top-level modules depend on each other in one direction only
//! (ARCHITECTURE.md, "Modules and what they may call"). This reads every `crate::<module>` path
//! in production code (comments, `tests.rs` files and trailing `#[cfg(test)]` modules aside) and
//! fails with the cycle it finds, so a new import that closes a loop is caught in review.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

fn src() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

/// Top-level module names declared in lib.rs.
fn modules() -> Vec<String> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let rest = l
                .strip_prefix("pub mod ")
                .or_else(|| l.strip_prefix("pub(crate) mod "))
                .or_else(|| l.strip_prefix("mod "))?;
            Some(rest.trim_end_matches(';').trim().to_owned())
        })
        .collect()
}

fn rust_files(p: &Path, out: &mut Vec<PathBuf>) {
    if p.is_dir() {
        for e in std::fs::read_dir(p).unwrap() {
            rust_files(&e.unwrap().path(), out);
        }
    } else if p.is_file()
        && p.extension().is_some_and(|e| e == "rs")
        && p.file_name().is_some_and(|n| n != "tests.rs")
    {
        out.push(p.to_path_buf());
    }
}

/// Production code of a file: without comments and without a trailing `#[cfg(test)] mod …`.
fn production(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|n| n.trim_start().starts_with("mod "))
        {
            break;
        }
        let code = line.split("//").next().unwrap_or("");
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Top-level modules named by `crate::x` and `crate::{x, y::…}` in `code`.
fn references(code: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let ident = |s: &str| -> String {
        s.chars()
            .take_while(|c| c.is_ascii_alphanumeric() || *c == '_')
            .collect()
    };
    for (i, _) in code.match_indices("crate::") {
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            // Split the brace group at depth 0 commas.
            let mut depth = 0usize;
            let mut start = 0usize;
            for (j, c) in group.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => {
                        found.insert(ident(group[start..j].trim()));
                        break;
                    }
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.insert(ident(group[start..j].trim()));
                        start = j + 1;
                    }
                    _ => {}
                }
            }
        } else {
            found.insert(ident(rest));
        }
    }
    found.remove("");
    found
}

#[test]
fn top_level_modules_have_no_import_cycles() {
    let mods = modules();
    assert!(mods.len() > 10, "lib.rs lists too few modules: {mods:?}");
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for m in &mods {
        let mut files = Vec::new();
        rust_files(&src().join(m), &mut files);
        rust_files(&src().join(format!("{m}.rs")), &mut files);
        let mut deps = BTreeSet::new();
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            deps.extend(
                references(&production(&text))
                    .into_iter()
                    .filter(|d| d != m && mods.contains(d)),
            );
        }
        graph.insert(m.clone(), deps);
    }
    // Depth-first search; a back edge is a cycle.
    fn visit(
        n: &str,
        graph: &BTreeMap<String, BTreeSet<String>>,
        state: &mut BTreeMap<String, u8>,
        path: &mut Vec<String>,
    ) -> Option<Vec<String>> {
        state.insert(n.to_owned(), 1);
        path.push(n.to_owned());
        for d in graph.get(n).into_iter().flatten() {
            match state.get(d.as_str()).copied().unwrap_or(0) {
                1 => {
                    let at = path.iter().position(|p| p == d).unwrap_or(0);
                    let mut cycle = path[at..].to_vec();
                    cycle.push(d.clone());
                    return Some(cycle);
                }
                0 => {
                    if let Some(c) = visit(d, graph, state, path) {
                        return Some(c);
                    }
                }
                _ => {}
            }
        }
        path.pop();
        state.insert(n.to_owned(), 2);
        None
    }
    let mut state = BTreeMap::new();
    for m in graph.keys() {
        if state.get(m.as_str()).copied().unwrap_or(0) == 0
            && let Some(cycle) = visit(m, &graph, &mut state, &mut Vec::new())
        {
            panic!(
                "import cycle between top-level modules: {}\nthe whole graph:\n{}",
                cycle.join(" → "),
                graph
                    .iter()
                    .map(|(k, v)| format!(
                        "  {k} → {}",
                        v.iter().cloned().collect::<Vec<_>>().join(", ")
                    ))
                    .collect::<Vec<_>>()
                    .join("\n")
            );
        }
    }
}

#[test]
fn the_scanner_sees_grouped_and_plain_paths() {
    let code = production(
        "use crate::{a::X, b, c::{d, e}};\nlet x = crate::f::g(); // crate::h\n#[cfg(test)]\nmod tests { use crate::z; }",
    );
    let got: Vec<String> = references(&code).into_iter().collect();
    assert_eq!(got, ["a", "b", "c", "f"]);
}
