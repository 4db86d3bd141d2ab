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

/// Top-level modules declared in lib.rs, with whether each is `pub`.
fn declared() -> Vec<(String, bool)> {
    let lib = std::fs::read_to_string(src().join("lib.rs")).unwrap();
    lib.lines()
        .filter_map(|l| {
            let l = l.trim();
            let (public, rest) = match l.strip_prefix("pub mod ") {
                Some(r) => (true, r),
                None => (
                    false,
                    l.strip_prefix("pub(crate) mod ")
                        .or_else(|| l.strip_prefix("mod "))?,
                ),
            };
            Some((rest.trim_end_matches(';').trim().to_owned(), public))
        })
        .collect()
}

fn modules() -> Vec<String> {
    declared().into_iter().map(|(m, _)| m).collect()
}

/// ARCHITECTURE.md's module table: (module, marked pub, may call).
fn documented() -> Vec<(String, bool, BTreeSet<String>)> {
    let doc = std::fs::read_to_string(
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../ARCHITECTURE.md"),
    )
    .unwrap();
    let section = doc
        .split("## Modules of the `rackboot` crate")
        .nth(1)
        .expect("ARCHITECTURE.md has the module table")
        .split("\n## ")
        .next()
        .unwrap_or("");
    let mut rows: Vec<(String, bool, BTreeSet<String>)> = Vec::new();
    for line in section.lines().filter(|l| l.starts_with("| `")) {
        let cells: Vec<&str> = line.trim_matches('|').split('|').map(str::trim).collect();
        let name = cells[0].split('`').nth(1).unwrap().to_owned();
        let public = cells[0].contains("**pub**");
        let may: BTreeSet<String> = match cells[2] {
            "—" => BTreeSet::new(),
            "everything above" => rows.iter().map(|(n, _, _)| n.clone()).collect(),
            list => list.split(',').map(|m| m.trim().to_owned()).collect(),
        };
        rows.push((name, public, may));
    }
    rows
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
    if std::env::var("PRINT_MODULE_GRAPH").is_ok() {
        for (k, v) in &graph {
            println!("{k}: {}", v.iter().cloned().collect::<Vec<_>>().join(", "));
        }
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
fn architecture_md_module_table_matches_lib_rs_and_the_imports() {
    let declared = declared();
    let documented = documented();
    let names = |v: Vec<String>| v.into_iter().collect::<BTreeSet<_>>();
    assert_eq!(
        names(declared.iter().map(|(m, _)| m.clone()).collect()),
        names(documented.iter().map(|(m, _, _)| m.clone()).collect()),
        "ARCHITECTURE.md's module table and lib.rs list different modules"
    );
    let mods = modules();
    for (m, public) in &declared {
        let (_, doc_pub, may) = documented.iter().find(|(n, _, _)| n == m).unwrap();
        assert_eq!(public, doc_pub, "{m}: pub in lib.rs vs ARCHITECTURE.md");
        // The module's first doc comment says the same.
        let root = [src().join(format!("{m}.rs")), src().join(m).join("mod.rs")]
            .into_iter()
            .find(|p| p.is_file())
            .unwrap();
        let head: String = std::fs::read_to_string(&root)
            .unwrap()
            .lines()
            .take_while(|l| l.starts_with("//!"))
            .map(|l| l.trim_start_matches("//!").trim())
            .collect::<Vec<_>>()
            .join(" ");
        let said: BTreeSet<String> = head
            .split("May call: ")
            .nth(1)
            .unwrap_or_else(|| {
                panic!(
                    "{}: the first doc comment has no 'May call:'",
                    root.display()
                )
            })
            .split('.')
            .next()
            .unwrap_or("")
            .split(',')
            .map(|x| x.trim().trim_matches('`').to_owned())
            .filter(|x| !x.is_empty() && x != "nothing of ours")
            .collect();
        assert_eq!(
            &said,
            may,
            "{}: 'May call:' differs from ARCHITECTURE.md",
            root.display()
        );
        let mut files = Vec::new();
        rust_files(&src().join(m), &mut files);
        rust_files(&src().join(format!("{m}.rs")), &mut files);
        for f in files {
            let text = std::fs::read_to_string(&f).unwrap();
            for d in references(&production(&text)) {
                assert!(
                    &d == m || !mods.contains(&d) || may.contains(&d),
                    "{} imports `{d}`, which ARCHITECTURE.md does not let `{m}` call",
                    f.display()
                );
            }
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
