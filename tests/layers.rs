//! The modules of `src/` form layers without cycles: no top-level module uses one that uses it
//! back, directly or through others (ARCHITECTURE.md draws the layers), and neither do the load
//! generator's (`loadtest/`). `cargo test --test layers` checks it; a cycle fails with the modules
//! that form it. It also holds every source file to about 400 lines.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// Top-level module of the crate in `root` → the top-level modules its files name as `crate::NAME`.
fn uses(root: &str) -> BTreeMap<String, BTreeSet<String>> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join(root);
    let mut graph: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    for (path, text) in rust_files(&src) {
        let relative = path.strip_prefix(&src).unwrap();
        let first = relative.components().next().unwrap().as_os_str().to_string_lossy();
        let module = first.trim_end_matches(".rs").to_string();
        if matches!(module.as_str(), "lib" | "main") {
            continue;
        }
        let used = graph.entry(module.clone()).or_default();
        for (i, _) in text.match_indices("crate::") {
            let name: String = text[i + 7..].chars().take_while(|c| c.is_ascii_alphanumeric() || *c == '_').collect();
            if !name.is_empty() && name != module {
                used.insert(name);
            }
        }
    }
    graph
}

/// Every `.rs` file under `root`, with its text.
fn rust_files(root: &Path) -> Vec<(PathBuf, String)> {
    let mut files = vec![];
    let mut stack = vec![root.to_path_buf()];
    while let Some(dir) = stack.pop() {
        for entry in std::fs::read_dir(&dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                stack.push(path);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let text = std::fs::read_to_string(&path).unwrap();
                files.push((path, text));
            }
        }
    }
    files
}

/// A cycle through `from`, as the modules on it.
fn cycle(graph: &BTreeMap<String, BTreeSet<String>>, from: &str) -> Option<Vec<String>> {
    fn walk(graph: &BTreeMap<String, BTreeSet<String>>, at: &str, target: &str, path: &mut Vec<String>, seen: &mut BTreeSet<String>) -> bool {
        for next in graph.get(at).into_iter().flatten() {
            if next == target {
                return true;
            }
            if seen.insert(next.clone()) {
                path.push(next.clone());
                if walk(graph, next, target, path, seen) {
                    return true;
                }
                path.pop();
            }
        }
        false
    }
    let mut path = vec![from.to_string()];
    walk(graph, from, from, &mut path, &mut BTreeSet::new()).then_some(path)
}

/// Fails on any cycle among the modules of `root`, after checking the scan sees `user` use `used`.
fn assert_no_cycles(root: &str, (user, used): (&str, &str)) {
    let graph = uses(root);
    assert!(graph.get(user).is_some_and(|u| u.contains(used)), "the scan sees the modules: {graph:?}");
    let cycles: Vec<String> = graph.keys().filter_map(|m| cycle(&graph, m)).map(|c| format!("{} → {}", c.join(" → "), c[0])).collect();
    assert!(cycles.is_empty(), "module cycles:\n{}", cycles.join("\n"));
}

#[test]
fn no_module_uses_one_that_uses_it_back() {
    assert_no_cycles("src", ("net", "actors"));
}

#[test]
fn no_loadtest_module_uses_one_that_uses_it_back() {
    assert_no_cycles("loadtest", ("watchers", "events"));
}

/// Issue 16's bound on a file's size, for every `.rs` file of `src/` and `loadtest/` (tests
/// included): a module that outgrows it is split by concern.
const MAX_LINES: usize = 420;

#[test]
fn no_source_file_is_over_about_400_lines() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let long: Vec<String> = ["src", "loadtest"]
        .into_iter()
        .flat_map(|dir| rust_files(&root.join(dir)))
        .filter_map(|(path, text)| {
            let lines = text.lines().count();
            (lines > MAX_LINES).then(|| format!("{} ({lines} lines)", path.display()))
        })
        .collect();
    assert!(long.is_empty(), "files over {MAX_LINES} lines:\n{}", long.join("\n"));
}
