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
    "json",
    "telemetry",
    "schema",
    "config",
    "window",
    "zoho",
    "mapping",
    "sink",
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
fn only_the_demo_command_uses_the_simulator() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    sources(&src, &mut files);
    let users: Vec<String> = files
        .iter()
        .filter(|f| std::fs::read_to_string(f).unwrap().contains("dealsync_sim"))
        .map(|f| f.strip_prefix(&src).unwrap().display().to_string())
        .collect();
    assert_eq!(users, ["commands/demo.rs"], "production code never imports the simulator");
}

#[test]
fn the_import_reader_sees_groups_and_paths() {
    let text = "use crate::{config::Settings, zoho};\nlet x = crate::sink::open();\nuse crate::exit::Exit;";
    let got: Vec<String> = uses(text).into_iter().collect();
    assert_eq!(got, ["config", "exit", "sink", "zoho"]);
}
