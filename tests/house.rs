//! The house rules that keep `src/` easy to walk, checked on the source itself: no file imports
//! a file above it (its module's own file, or an ancestor's), no import circle between files,
//! and no file over 500 lines. A file's imports are the `crate::`, `super::` and `self::` paths
//! it names outside comments and its tests; test files (`tests.rs`) may import what they test.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

/// A module, as its path from the crate root (`["parent", "state"]`).
type Module = Vec<String>;

/// Every source file of the binary, by module, with its text.
fn files() -> BTreeMap<Module, String> {
    fn walk(dir: &Path, out: &mut BTreeMap<Module, String>) {
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                walk(&path, out);
            } else if path.extension().is_some_and(|e| e == "rs") {
                let rel = path.strip_prefix("src").unwrap().with_extension("");
                let mut module: Module = rel.iter().map(|p| p.to_string_lossy().into()).collect();
                if module.last().is_some_and(|m| m == "mod" || m == "main") {
                    module.pop();
                }
                out.insert(module, std::fs::read_to_string(&path).unwrap());
            }
        }
    }
    let mut out = BTreeMap::new();
    walk(Path::new("src"), &mut out);
    out
}

/// The text a file's imports are read from: no comments, no inline test module, and nothing
/// inside another inline module (whose `super::` means the file itself).
fn code(text: &str) -> String {
    let text = text.split("#[cfg(test)]\nmod tests {").next().unwrap();
    let mut out = String::new();
    let mut inline_depth: Option<usize> = None;
    let mut depth = 0usize;
    for line in text.lines() {
        let line = line.split("//").next().unwrap();
        let trimmed = line.trim_start();
        if inline_depth.is_none() && trimmed.starts_with("mod ") && trimmed.ends_with('{') {
            inline_depth = Some(depth);
        }
        depth += line.matches('{').count();
        depth = depth.saturating_sub(line.matches('}').count());
        match inline_depth {
            Some(at) if depth <= at && trimmed.starts_with('}') => inline_depth = None,
            Some(_) => {}
            None => {
                out.push_str(line);
                out.push('\n');
            }
        }
    }
    out
}

/// The paths a file names: every `use` tree expanded, and every `crate::`/`super::` path.
fn paths(code: &str) -> Vec<Vec<String>> {
    fn expand(prefix: &[String], tree: &str, out: &mut Vec<Vec<String>>) {
        let tree = tree.trim();
        if let Some(inner) = tree.strip_prefix('{').and_then(|t| t.strip_suffix('}')) {
            let (mut depth, mut start) = (0, 0);
            for (i, c) in inner.char_indices() {
                match c {
                    '{' => depth += 1,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        expand(prefix, &inner[start..i], out);
                        start = i + 1;
                    }
                    _ => {}
                }
            }
            expand(prefix, &inner[start..], out);
        } else if let Some(at) = tree.find("::{") {
            let mut prefix = prefix.to_vec();
            prefix.extend(tree[..at].split("::").map(str::to_string));
            expand(&prefix, &tree[at + 2..], out);
        } else if !tree.is_empty() {
            let mut path = prefix.to_vec();
            let tree = tree.split(" as ").next().unwrap();
            path.extend(tree.split("::").map(str::to_string));
            out.push(path);
        }
    }
    let mut out = Vec::new();
    let squeezed: String = code.split_whitespace().collect::<Vec<_>>().join(" ");
    for part in squeezed.split("use ").skip(1) {
        if let Some(tree) = part.split(';').next() {
            expand(&[], &tree.replace(' ', ""), &mut out);
        }
    }
    let word = |c: char| c.is_ascii_alphanumeric() || c == '_' || c == ':';
    for token in code.split(|c: char| !word(c)) {
        let whole = !token.ends_with("::");
        if whole && (token.starts_with("crate::") || token.starts_with("super::")) {
            out.push(token.split("::").map(str::to_string).collect());
        }
    }
    out
}

/// The file modules `module`'s file imports.
fn imports(module: &Module, text: &str, all: &BTreeMap<Module, String>) -> BTreeSet<Module> {
    let mut found = BTreeSet::new();
    for path in paths(&code(text)) {
        let (mut base, mut rest) = (module.clone(), &path[..]);
        match rest.first().map(String::as_str) {
            Some("crate") => {
                base.clear();
                rest = &rest[1..];
            }
            Some("super") => {
                while rest.first().is_some_and(|p| p == "super") {
                    base.pop();
                    rest = &rest[1..];
                }
            }
            Some("self") => rest = &rest[1..],
            // A bare path is a child module of this one, or no file at all (a crate, an item).
            Some(first)
                if !all.contains_key(&[module.clone(), vec![first.to_string()]].concat()) =>
            {
                continue;
            }
            _ => {}
        }
        let mut full = base;
        full.extend(rest.iter().filter(|p| *p != "self").cloned());
        // The longest prefix that is a file.
        let target = (0..=full.len())
            .rev()
            .map(|n| full[..n].to_vec())
            .find(|m| all.contains_key(m));
        if let Some(target) = target
            && &target != module
        {
            found.insert(target);
        }
    }
    found
}

fn graph() -> (BTreeMap<Module, String>, BTreeMap<Module, BTreeSet<Module>>) {
    let all = files();
    let mut edges = BTreeMap::new();
    for (module, text) in &all {
        edges.insert(module.clone(), imports(module, text, &all));
    }
    (all, edges)
}

fn name(module: &Module) -> String {
    match module.is_empty() {
        true => "main".into(),
        false => module.join("/"),
    }
}

#[test]
fn no_file_imports_a_file_above_it() {
    let (_, edges) = graph();
    let mut upward = Vec::new();
    for (from, tos) in &edges {
        if from.last().is_some_and(|m| m == "tests") {
            continue;
        }
        for to in tos {
            if to.len() < from.len() && from.starts_with(to) {
                upward.push(format!("{} -> {}", name(from), name(to)));
            }
        }
    }
    assert!(upward.is_empty(), "imports that climb: {upward:#?}");
}

#[test]
fn no_two_files_import_each_other_and_no_circle_runs_through_several() {
    let (_, edges) = graph();
    // A depth-first search from every file: a path back to where it started is a circle.
    let mut circles = Vec::new();
    for start in edges.keys() {
        let mut stack = vec![(start.clone(), vec![start.clone()])];
        let mut seen = BTreeSet::new();
        while let Some((at, path)) = stack.pop() {
            for next in edges.get(&at).into_iter().flatten() {
                if next == start {
                    circles.push(path.iter().map(name).collect::<Vec<_>>().join(" -> "));
                } else if seen.insert(next.clone()) {
                    let mut longer = path.clone();
                    longer.push(next.clone());
                    stack.push((next.clone(), longer));
                }
            }
        }
    }
    assert!(circles.is_empty(), "import circles: {circles:#?}");
}

#[test]
fn no_source_file_is_over_500_lines() {
    let (all, _) = graph();
    let long: Vec<(String, usize)> = all
        .iter()
        .map(|(module, text)| (name(module), text.lines().count()))
        .filter(|(_, lines)| *lines > 500)
        .collect();
    assert!(long.is_empty(), "{long:?}");
}

#[test]
fn the_rules_above_see_a_circle_and_a_climb_when_there_is_one() {
    // The checks themselves, on a made-up pair of files: they must not pass by reading nothing.
    let mut all = BTreeMap::new();
    let a: Module = vec!["a".into()];
    let b: Module = vec!["a".into(), "b".into()];
    all.insert(a.clone(), "mod b;\nuse b::Thing;\n".to_string());
    all.insert(
        b.clone(),
        "use super::Other;\nuse crate::a::b::Thing;\n".to_string(),
    );
    let from_a = imports(&a, &all[&a], &all);
    let from_b = imports(&b, &all[&b], &all);
    assert!(from_a.contains(&b), "{from_a:?}");
    assert!(from_b.contains(&a), "the climb from a/b to a: {from_b:?}");
    // And the real graph has edges: the reading found imports.
    let (_, edges) = graph();
    assert!(edges.values().map(BTreeSet::len).sum::<usize>() > 200);
}
