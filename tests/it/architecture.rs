//! The modules keep the data's direction: a module may use the ones before it in `LAYERS`, never one after it,
//! so the picture in `lib.rs` and the README stays true. Read from the `crate::…` paths in the source itself.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// The top-level modules of `src/`, in the order of the data (foundations first, the commands last).
const LAYERS: &[&str] = &[
    "exit",
    "files",
    "retry",
    "shutdown",
    "telemetry",
    "schema",
    "config",
    "window",
    "zoho",
    "mapping",
    "sink",
    "run",
    "commands",
];

fn sources(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            sources(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a file of `src/` belongs to (`src/zoho/fetch.rs` → `zoho`), or `None` for the crate
/// root, the binary and the build script.
fn module_of(src: &Path, file: &Path) -> Option<String> {
    let rel = file.strip_prefix(src).unwrap();
    let first = rel.components().next()?.as_os_str().to_str()?.trim_end_matches(".rs").to_string();
    (!matches!(first.as_str(), "lib" | "main" | "build")).then_some(first)
}

/// Every module a file names through `crate::name` (in `use` lines and in paths alike), and through
/// `use crate::{a, b::c}` groups.
fn uses(text: &str) -> BTreeSet<String> {
    let mut found = BTreeSet::new();
    let mut rest = text;
    while let Some(i) = rest.find("crate::") {
        rest = &rest[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let end = group.find('}').unwrap_or(group.len());
            for item in group[..end].split(',') {
                let name: String = item.trim().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
                if !name.is_empty() {
                    found.insert(name);
                }
            }
        } else {
            let name: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
            found.insert(name);
        }
    }
    found
}

fn rank(module: &str) -> usize {
    LAYERS.iter().position(|m| *m == module).unwrap_or_else(|| panic!("module `{module}` is not placed in LAYERS"))
}

#[test]
fn no_module_imports_one_further_down_the_data_flow() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.sort();
    let mut against = Vec::new();
    let mut arrows = 0;
    for file in &files {
        let Some(module) = module_of(&src, file) else { continue };
        let text = std::fs::read_to_string(file).unwrap();
        for used in uses(&text) {
            if used == module {
                continue;
            }
            arrows += 1;
            if rank(&used) > rank(&module) {
                against.push(format!("{} ({module}) uses crate::{used}", file.strip_prefix(&src).unwrap().display()));
            }
        }
    }
    assert!(arrows > 20, "the test read the imports ({arrows} found)");
    assert!(against.is_empty(), "imports running back up the data flow:\n{}", against.join("\n"));
}

#[test]
fn every_top_level_module_has_a_place_in_the_layers() {
    let lib = std::fs::read_to_string(Path::new(env!("CARGO_MANIFEST_DIR")).join("src/lib.rs")).unwrap();
    let declared: BTreeSet<&str> =
        lib.lines().filter_map(|l| l.trim().strip_prefix("pub mod ")).map(|m| m.trim_end_matches(';')).collect();
    let placed: BTreeSet<&str> = LAYERS.iter().copied().collect();
    assert_eq!(declared, placed);
}

#[test]
fn only_the_demo_and_the_command_line_use_the_simulator() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let mut users: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).unwrap().contains("dealsync_sim"))
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    // The command line mounts `dealsync simulate`'s flags; the demo runs it. Nothing on a deal's path uses it.
    users.sort();
    assert_eq!(users, ["config/cli.rs", "run/demo.rs"], "only the command line and the demo name the simulator");
}

#[test]
fn the_import_reader_sees_groups_and_paths() {
    let text = "use crate::{config::Settings, zoho};\nlet x = crate::sink::open();\nuse crate::exit::Exit;";
    let got: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(got, ["config", "exit", "sink", "zoho"]);
}

/// A file's module path (`src/run/setup.rs` → `run::setup`, `src/sink/bigquery/mod.rs` →
/// `sink::bigquery`).
fn module_path(src: &Path, file: &Path) -> Vec<String> {
    let rel = file.strip_prefix(src).unwrap().with_extension("");
    let mut parts: Vec<String> = rel.components().map(|c| c.as_os_str().to_string_lossy().into_owned()).collect();
    if parts.last().is_some_and(|p| p == "mod") {
        parts.pop();
    }
    parts
}

/// The files a file's production code (up to its first `#[cfg(test)]`) names through `crate::…`, `super::…`
/// and `self::…` paths, resolved to the longest module path that is a file.
fn file_uses(text: &str, me: &[String], modules: &BTreeSet<Vec<String>>) -> BTreeSet<Vec<String>> {
    let code = text.split("#[cfg(test)]").next().unwrap();
    let mut found = BTreeSet::new();
    let is_mod_rs = modules.iter().any(|m| m.len() > me.len() && m.starts_with(me));
    for (prefix, base) in [
        ("crate::", Vec::new()),
        ("super::", if is_mod_rs { me[..me.len().saturating_sub(1)].to_vec() } else { me[..me.len() - 1].to_vec() }),
        ("self::", if is_mod_rs { me.to_vec() } else { me[..me.len() - 1].to_vec() }),
    ] {
        let mut rest = code;
        while let Some(i) = rest.find(prefix) {
            // `super::` inside `crate::x::super::` cannot happen; skip words that only end in the prefix.
            let before = rest[..i].chars().last();
            rest = &rest[i + prefix.len()..];
            if before.is_some_and(|c| c.is_alphanumeric() || c == '_') {
                continue;
            }
            // `a::b::c`, or `a::{b, c::d}` (one level of braces, as the code writes them).
            let head: String = rest.chars().take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':').collect();
            let tails: Vec<String> = match rest[head.len()..].strip_prefix('{') {
                Some(group) => group[..group.find('}').unwrap_or(group.len())]
                    .split(',')
                    .map(|item| format!("{head}{}", item.trim()))
                    .collect(),
                None => vec![head],
            };
            for tail in tails {
                let mut path = base.clone();
                path.extend(tail.trim().split("::").filter(|s| !s.is_empty()).map(str::to_string));
                while !path.is_empty() && !modules.contains(&path) {
                    path.pop();
                }
                if !path.is_empty() && path != me {
                    found.insert(path);
                }
            }
        }
    }
    found
}

#[test]
fn no_two_files_import_each_other_directly_or_around_a_circle() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    files.retain(|f| module_of(&src, f).is_some());
    let modules: BTreeSet<Vec<String>> = files.iter().map(|f| module_path(&src, f)).collect();
    let edges: Vec<(Vec<String>, BTreeSet<Vec<String>>)> = files
        .iter()
        .map(|f| {
            let me = module_path(&src, f);
            let uses = file_uses(&std::fs::read_to_string(f).unwrap(), &me, &modules);
            (me, uses)
        })
        .collect();
    let arrows: usize = edges.iter().map(|(_, u)| u.len()).sum();
    assert!(arrows > 50, "the test read the imports ({arrows} found)");
    // A file that can reach itself through the arrows is on a circle.
    let graph: std::collections::BTreeMap<&Vec<String>, &BTreeSet<Vec<String>>> =
        edges.iter().map(|(m, u)| (m, u)).collect();
    let mut circles = Vec::new();
    for (start, _) in &edges {
        let mut seen = BTreeSet::new();
        let mut stack: Vec<(Vec<String>, Vec<String>)> = vec![(start.clone(), vec![start.join("::")])];
        while let Some((at, trail)) = stack.pop() {
            for next in graph.get(&at).into_iter().flat_map(|u| u.iter()) {
                if next == start {
                    circles.push(format!("{} -> {}", trail.join(" -> "), start.join("::")));
                } else if seen.insert(next.clone()) {
                    let mut t = trail.clone();
                    t.push(next.join("::"));
                    stack.push((next.clone(), t));
                }
            }
        }
    }
    assert!(circles.is_empty(), "files that import each other:\n{}", circles.join("\n"));
}

#[test]
fn the_circle_reader_sees_super_and_self_paths() {
    let modules: BTreeSet<Vec<String>> = [
        vec!["commands".to_string()],
        vec!["commands".into(), "sync".into()],
        vec!["commands".into(), "reconcile".into()],
        vec!["sink".into()],
        vec!["sink".into(), "bigquery".into()],
        vec!["sink".into(), "bigquery".into(), "jobs".into()],
    ]
    .into();
    let me = vec!["commands".to_string(), "sync".to_string()];
    let got = file_uses("use super::reconcile::Completeness;\nuse crate::sink::{Sink, bigquery};\n", &me, &modules);
    let names: Vec<String> = got.iter().map(|p| p.join("::")).collect();
    assert_eq!(names, ["commands::reconcile", "sink", "sink::bigquery"]);
    let me = vec!["sink".to_string(), "bigquery".to_string()];
    let got = file_uses("use self::jobs::Jobs;\n#[cfg(test)]\nuse super::super::commands;", &me, &modules);
    assert_eq!(got.iter().map(|p| p.join("::")).collect::<Vec<_>>(), ["sink::bigquery::jobs"]);
}
