//! The layer rule of ARCHITECTURE.md, checked on the sources: core <- shell <- cli, with the
//! fuzzing entry points and the simulator above them, and no import circle between the files of
//! a crate. Cargo already keeps the core crate from reaching the shell; this test sees what
//! Cargo cannot: the files inside one crate.
//!
//! Every path a file names (`use` trees, and `crate::`/`super::` paths in code) is resolved to the
//! file of the deepest module it reaches. References to a parent `mod.rs`/`lib.rs` are namespace
//! hops, not dependencies, and are left out.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A crate's module files: module path (e.g. `["shell", "driver"]`) -> file.
struct Crate {
    root: PathBuf,
    modules: BTreeMap<Vec<String>, PathBuf>,
}

impl Crate {
    fn load(root: &Path) -> Crate {
        let mut modules = BTreeMap::new();
        walk(root, root, &mut modules);
        Crate {
            root: root.to_path_buf(),
            modules,
        }
    }

    /// The deepest module file a path from `module` reaches.
    fn resolve(&self, module: &[String], path: &[String]) -> Option<Vec<String>> {
        let at: Vec<String> = match path.first().map(String::as_str) {
            Some("crate") => Vec::new(),
            Some("super") => {
                let mut m = module.to_vec();
                let mut rest = path;
                while rest.first().map(String::as_str) == Some("super") {
                    m.pop()?;
                    rest = &rest[1..];
                }
                return self.descend(m, rest);
            }
            Some("self") => module.to_vec(),
            _ => return None,
        };
        self.descend(at, &path[1..])
    }

    fn descend(&self, mut at: Vec<String>, rest: &[String]) -> Option<Vec<String>> {
        for segment in rest {
            at.push(segment.clone());
            if !self.modules.contains_key(&at) {
                at.pop();
                break;
            }
        }
        Some(at)
    }

    /// Module -> modules it depends on.
    fn edges(&self) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
        let mut edges: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
        for (module, file) in &self.modules {
            let text = strip_comments(&std::fs::read_to_string(file).unwrap());
            let text = text.split("#[cfg(test)]").next().unwrap_or("");
            for path in paths_in(text) {
                let Some(target) = self.resolve(module, &path) else {
                    continue;
                };
                let is_ancestor = module.starts_with(&target);
                if !is_ancestor && &target != module {
                    edges.entry(module.clone()).or_default().insert(target);
                }
            }
        }
        edges
    }
}

fn walk(root: &Path, dir: &Path, modules: &mut BTreeMap<Vec<String>, PathBuf>) {
    for entry in std::fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            if path.file_name().is_some_and(|n| n != "bin") {
                walk(root, &path, modules);
            }
            continue;
        }
        if path.extension().is_none_or(|e| e != "rs") {
            continue;
        }
        let rel = path.strip_prefix(root).unwrap().with_extension("");
        let mut module: Vec<String> = rel
            .components()
            .map(|c| c.as_os_str().to_string_lossy().into_owned())
            .collect();
        if matches!(
            module.last().map(String::as_str),
            Some("mod" | "lib" | "main")
        ) {
            module.pop();
        }
        modules.insert(module, path);
    }
}

fn strip_comments(text: &str) -> String {
    text.lines()
        .map(|l| match l.find("//") {
            Some(i) if !l[..i].contains('"') => &l[..i],
            _ => l,
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// Every `crate::`/`super::`/`self::` path in the text, `use` trees expanded.
fn paths_in(text: &str) -> Vec<Vec<String>> {
    let tokens = tokenize(text);
    let mut out = Vec::new();
    let mut i = 0;
    while i < tokens.len() {
        let starts = matches!(tokens[i].as_str(), "crate" | "super" | "self")
            && tokens.get(i + 1).is_some_and(|t| t == "::")
            && (i == 0 || tokens[i - 1] != "::");
        if starts {
            i = expand(&tokens, i, Vec::new(), &mut out);
        } else {
            i += 1;
        }
    }
    out
}

/// Expands the path (or use tree) starting at `tokens[i]`; returns the index after it.
fn expand(
    tokens: &[String],
    mut i: usize,
    mut prefix: Vec<String>,
    out: &mut Vec<Vec<String>>,
) -> usize {
    loop {
        let Some(token) = tokens.get(i) else {
            out.push(prefix);
            return i;
        };
        if token == "{" {
            i += 1;
            loop {
                match tokens.get(i).map(String::as_str) {
                    None => return i,
                    Some("}") => return i + 1,
                    Some(",") => i += 1,
                    Some(_) => i = expand(tokens, i, prefix.clone(), out),
                }
            }
        }
        if is_ident(token) {
            prefix.push(token.clone());
            i += 1;
            if tokens.get(i).is_some_and(|t| t == "::") {
                i += 1;
                continue;
            }
        }
        out.push(prefix);
        return i;
    }
}

fn is_ident(t: &str) -> bool {
    t.chars().all(|c| c.is_alphanumeric() || c == '_') && !t.is_empty()
}

fn tokenize(text: &str) -> Vec<String> {
    let mut tokens = Vec::new();
    let chars: Vec<char> = text.chars().collect();
    let mut i = 0;
    while i < chars.len() {
        let c = chars[i];
        if c.is_alphanumeric() || c == '_' {
            let start = i;
            while i < chars.len() && (chars[i].is_alphanumeric() || chars[i] == '_') {
                i += 1;
            }
            tokens.push(chars[start..i].iter().collect());
        } else if c == ':' && chars.get(i + 1) == Some(&':') {
            tokens.push("::".into());
            i += 2;
        } else if c == '"' {
            // Skip string literals (paths in messages are not imports).
            i += 1;
            while i < chars.len() && chars[i] != '"' {
                i += if chars[i] == '\\' { 2 } else { 1 };
            }
            i += 1;
        } else {
            if !c.is_whitespace() {
                tokens.push(c.to_string());
            }
            i += 1;
        }
    }
    tokens
}

/// A cycle in the graph, if any, as the list of modules around it.
fn find_cycle(edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>) -> Option<Vec<String>> {
    fn visit(
        node: &Vec<String>,
        edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
        stack: &mut Vec<Vec<String>>,
        done: &mut BTreeSet<Vec<String>>,
    ) -> Option<Vec<String>> {
        if let Some(pos) = stack.iter().position(|n| n == node) {
            let mut cycle: Vec<String> = stack[pos..].iter().map(|m| m.join("::")).collect();
            cycle.push(node.join("::"));
            return Some(cycle);
        }
        if done.contains(node) {
            return None;
        }
        stack.push(node.clone());
        for next in edges.get(node).into_iter().flatten() {
            if let Some(cycle) = visit(next, edges, stack, done) {
                return Some(cycle);
            }
        }
        stack.pop();
        done.insert(node.clone());
        None
    }
    let mut done = BTreeSet::new();
    edges
        .keys()
        .find_map(|node| visit(node, edges, &mut Vec::new(), &mut done))
}

fn manifest() -> &'static Path {
    Path::new(env!("CARGO_MANIFEST_DIR"))
}

const CRATES: &[&str] = &["src", "crates/iris-worker-core/src", "sim/src"];

#[test]
fn no_import_circle_between_files() {
    for dir in CRATES {
        let krate = Crate::load(&manifest().join(dir));
        assert!(krate.modules.len() > 5, "{dir}: {:?}", krate.modules.keys());
        if let Some(cycle) = find_cycle(&krate.edges()) {
            panic!("{dir}: import circle: {}", cycle.join(" -> "));
        }
    }
}

/// Each edge between files, seen from the folders they sit in: an edge from `a/x/...` to
/// `a/y/...` is one from `a/x` to `a/y` (the siblings under their common parent).
fn folder_edges(
    edges: &BTreeMap<Vec<String>, BTreeSet<Vec<String>>>,
) -> BTreeMap<Vec<String>, BTreeSet<Vec<String>>> {
    let mut folders: BTreeMap<Vec<String>, BTreeSet<Vec<String>>> = BTreeMap::new();
    for (from, targets) in edges {
        for to in targets {
            let common = from.iter().zip(to).take_while(|(a, b)| a == b).count();
            if from.len() > common + 1 || to.len() > common + 1 {
                let (a, b) = (
                    &from[..(common + 1).min(from.len())],
                    &to[..(common + 1).min(to.len())],
                );
                if a != b {
                    folders.entry(a.to_vec()).or_default().insert(b.to_vec());
                }
            }
        }
    }
    folders
}

#[test]
fn no_import_circle_between_folders() {
    for dir in CRATES {
        let krate = Crate::load(&manifest().join(dir));
        if let Some(cycle) = find_cycle(&folder_edges(&krate.edges())) {
            panic!(
                "{dir}: import circle between folders: {}",
                cycle.join(" -> ")
            );
        }
    }
}

/// (lower layer, higher layer): no file of the lower names the higher one.
const LAYERS: &[(&str, &str)] = &[("shell", "cli"), ("shell", "fuzzing"), ("cli", "fuzzing")];

#[test]
fn lower_layers_never_import_higher_ones() {
    let krate = Crate::load(&manifest().join("src"));
    let edges = krate.edges();
    let mut offences = Vec::new();
    for (from, targets) in &edges {
        for (lower, higher) in LAYERS {
            if from.first().map(String::as_str) != Some(lower) {
                continue;
            }
            for target in targets {
                if target.first().map(String::as_str) == Some(higher) {
                    let file = krate.modules[from].strip_prefix(&krate.root).unwrap();
                    offences.push(format!("{} imports {}", file.display(), target.join("::")));
                }
            }
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}

#[test]
fn the_checks_bite() {
    let paths =
        paths_in("use crate::shell::{driver::{Clock, Driver}, journal};\nlet x = super::y::Z;");
    let names: Vec<String> = paths.iter().map(|p| p.join("::")).collect();
    assert_eq!(
        names,
        [
            "crate::shell::driver::Clock",
            "crate::shell::driver::Driver",
            "crate::shell::journal",
            "super::y::Z"
        ]
    );
    let path = |p: &str| p.split('/').map(String::from).collect::<Vec<_>>();
    let files = BTreeMap::from([
        (
            path("s/logs/store"),
            BTreeSet::from([path("s/runtime/error")]),
        ),
        (
            path("s/runtime/docker/follow"),
            BTreeSet::from([path("s/logs/lines")]),
        ),
    ]);
    assert_eq!(find_cycle(&files), None, "no circle between the files");
    assert_eq!(
        find_cycle(&folder_edges(&files)),
        Some(vec![
            "s::logs".into(),
            "s::runtime".into(),
            "s::logs".into()
        ]),
        "but one between their folders"
    );
    let a = vec!["a".to_string()];
    let b = vec!["b".to_string()];
    let edges = BTreeMap::from([
        (a.clone(), BTreeSet::from([b.clone()])),
        (b.clone(), BTreeSet::from([a.clone()])),
    ]);
    assert_eq!(
        find_cycle(&edges),
        Some(vec!["a".into(), "b".into(), "a".into()])
    );
}

/// (transport, service): the transport (`shell::connect`) names no service and no era; each
/// service owns its routes and names the transport.
const TRANSPORT_RULES: &[(&[&str], &[&str])] = &[
    (&["shell", "connect"], &["shell", "service"]),
    (&["shell", "connect"], &["shell", "routes"]),
    (&["shell", "connect"], &["shell", "era2026_06"]),
];

#[test]
fn the_transport_knows_no_service_or_era() {
    let krate = Crate::load(&manifest().join("src"));
    let starts = |path: &[String], prefix: &[&str]| {
        path.len() >= prefix.len() && path.iter().zip(prefix).all(|(a, b)| a == b)
    };
    let mut offences = Vec::new();
    for (from, targets) in &krate.edges() {
        for (transport, service) in TRANSPORT_RULES {
            if !starts(from, transport) {
                continue;
            }
            for target in targets.iter().filter(|t| starts(t, service)) {
                let file = krate.modules[from].strip_prefix(&krate.root).unwrap();
                offences.push(format!("{} imports {}", file.display(), target.join("::")));
            }
        }
    }
    assert!(offences.is_empty(), "{}", offences.join("\n"));
}
