//! The control plane's layers point one way (ARCHITECTURE.md, "Layers"). This test
//! reads every `crate::…` path in `src/` and fails when a module names a module of
//! its own layer or of a layer above it, or when a top-level module has no layer.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

/// Each top-level module of `src/` and its layer; a module may use only modules of
/// lower layers. Adapters share a layer, so they cannot call each other.
const LAYERS: &[(&str, u8)] = &[
    // Seams and leaves: they know nothing of the control plane above them.
    ("store", 0),
    ("bus", 0),
    ("object_store", 0),
    ("pipelines", 0),
    ("telemetry", 0),
    // Settings (they name the S3 settings type) and log reading/archiving over the seams.
    ("config", 1),
    ("logs", 1),
    // The shared state: seams + settings, nothing that runs.
    ("context", 2),
    // The domain: the run lifecycle, and authentication (users, sessions, tokens, audit).
    ("runs", 3),
    ("auth", 3),
    // Runner identity: enrollment and the NATS auth callout, over the store and auth's secrets.
    ("runner_identity", 4),
    // Adapters, side by side.
    ("http", 5),
    ("runner_api", 5),
    ("embedded_runner", 5),
    ("sweeper", 5),
    ("migrate", 5),
    ("cli", 5),
    // The composition root.
    ("startup", 6),
];

fn layer(module: &str) -> Option<u8> {
    LAYERS.iter().find(|(name, _)| *name == module).map(|(_, layer)| *layer)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for entry in std::fs::read_dir(dir).expect("read src dir") {
        let path = entry.expect("dir entry").path();
        if path.is_dir() {
            rust_files(&path, out);
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
}

/// The top-level module a source file belongs to (`runs/mod.rs` → `runs`).
fn module_of(src: &Path, file: &Path) -> String {
    let relative = file.strip_prefix(src).expect("file under src");
    let first = relative.components().next().expect("a component").as_os_str().to_string_lossy().into_owned();
    first.trim_end_matches(".rs").to_owned()
}

/// Every top-level module named after `crate::` in `code` (comments removed first),
/// including each member of a `crate::{a, b::C}` group.
fn crate_paths(code: &str) -> BTreeSet<String> {
    let code: String = code.lines().map(|l| l.split("//").next().unwrap_or("")).collect::<Vec<_>>().join("\n");
    let mut found = BTreeSet::new();
    let mut rest = code.as_str();
    while let Some(at) = rest.find("crate::") {
        let preceded_by_ident =
            rest[..at].chars().next_back().is_some_and(|c| c.is_alphanumeric() || c == '_' || c == ':');
        rest = &rest[at + "crate::".len()..];
        if preceded_by_ident {
            continue; // `other_crate::…`
        }
        if let Some(group) = rest.strip_prefix('{') {
            // Split the group at its top-level commas; each item starts with a module.
            let mut depth = 0;
            let mut item = String::new();
            for c in group.chars() {
                match c {
                    '{' => depth += 1,
                    '}' if depth == 0 => break,
                    '}' => depth -= 1,
                    ',' if depth == 0 => {
                        found.extend(leading_ident(&item));
                        item.clear();
                        continue;
                    }
                    _ => {}
                }
                item.push(c);
            }
            found.extend(leading_ident(&item));
        } else {
            found.extend(leading_ident(rest));
        }
    }
    found
}

fn leading_ident(text: &str) -> Option<String> {
    let ident: String = text.trim_start().chars().take_while(|c| c.is_alphanumeric() || *c == '_').collect();
    (!ident.is_empty()).then_some(ident)
}

#[test]
fn the_parser_finds_plain_and_grouped_paths() {
    let code = "use crate::runs;\nuse crate::{bus::{Bus, local}, store};\nlet x = crate::logs::live::f();\n\
                // crate::http in a comment\nuse other_crate::startup;\nuse crate::{context::Context as C, config};";
    let found: Vec<_> = crate_paths(code).into_iter().collect();
    assert_eq!(found, vec!["bus", "config", "context", "logs", "runs", "store"]);
}

#[test]
fn control_plane_modules_only_import_lower_layers() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    files.sort();
    let mut violations = Vec::new();
    let mut modules_seen = BTreeSet::new();
    for file in &files {
        let module = module_of(&src, file);
        if module == "lib" || module == "main" {
            continue; // The crate root and the binary list modules; they are not a layer.
        }
        modules_seen.insert(module.clone());
        let Some(own) = layer(&module) else {
            violations.push(format!("{}: module `{module}` has no layer in LAYERS", file.display()));
            continue;
        };
        let code = std::fs::read_to_string(file).expect("read source file");
        for used in crate_paths(&code) {
            if used == module {
                continue;
            }
            match layer(&used) {
                Some(other) if other < own => {}
                Some(other) => violations.push(format!(
                    "{}: `{module}` (layer {own}) uses `{used}` (layer {other}); only lower layers may be used",
                    file.display()
                )),
                None => violations.push(format!("{}: uses `crate::{used}`, which has no layer", file.display())),
            }
        }
    }
    assert!(modules_seen.len() >= LAYERS.len() - 1, "the walk found too few modules: {modules_seen:?}");
    assert!(violations.is_empty(), "layer violations:\n{}", violations.join("\n"));
}
