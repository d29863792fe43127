//! The code's layers, checked: every `crate::`, `super::`, `self::` and
//! child-module path in `src/` is resolved to the file that defines what it
//! names, and the resulting file graph must
//!
//! - have no cycles (no two files that import each other, directly or
//!   around a loop), and
//! - point down only: `http -> cache -> {store, upstream} -> disk`, with
//!   `store` and `upstream` independent of each other.
//!
//! A folder's `mod.rs` only declares and re-exports its files, so a path
//! through a re-export counts as an edge to the file that defines the item.
//! Inline `#[cfg(test)] mod tests` blocks are left out: they test their own
//! file. Run alone with `cargo test --test architecture`.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

/// A module path from the crate root, e.g. `["cache", "run"]`.
type ModPath = Vec<String>;

struct Module {
    file: PathBuf,
    /// Names a `mod.rs` re-exports, and the child module defining each.
    reexports: BTreeMap<String, String>,
    /// Paths this file uses, absolute from the crate root.
    uses: Vec<ModPath>,
}

fn module_path(src: &Path, file: &Path) -> ModPath {
    let rel = file.strip_prefix(src).unwrap();
    let mut parts: Vec<String> = rel
        .iter()
        .map(|p| p.to_string_lossy().trim_end_matches(".rs").to_owned())
        .collect();
    if parts.last().is_some_and(|l| l == "mod" || l == "lib") {
        parts.pop();
    }
    parts
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) {
    for e in std::fs::read_dir(dir).unwrap().flatten() {
        let p = e.path();
        if p.is_dir() {
            rust_files(&p, out);
        } else if p.extension().is_some_and(|x| x == "rs") {
            out.push(p);
        }
    }
}

/// The production part of a file: inline test modules cut off.
fn production(text: &str) -> String {
    let mut out = String::new();
    let mut lines = text.lines().peekable();
    while let Some(line) = lines.next() {
        if line.trim() == "#[cfg(test)]"
            && lines
                .peek()
                .is_some_and(|l| l.trim_start().starts_with("mod tests"))
        {
            break;
        }
        // Comments name paths without importing them.
        let code = line.split("//").next().unwrap_or("");
        out.push_str(code);
        out.push('\n');
    }
    out
}

/// Expands `a::{b, c::{d, e}}` into `a::b`, `a::c::d`, `a::c::e`.
fn expand(tree: &str) -> Vec<String> {
    let tree = tree.trim();
    let Some(open) = tree.find('{') else {
        let path = tree.split(" as ").next().unwrap().trim();
        return if path.is_empty() {
            vec![]
        } else {
            vec![path.to_owned()]
        };
    };
    let prefix = tree[..open].trim_end_matches("::").trim();
    let inner = &tree[open + 1..tree.rfind('}').unwrap()];
    let mut items = Vec::new();
    let (mut depth, mut start) = (0, 0);
    for (i, c) in inner.char_indices() {
        match c {
            '{' => depth += 1,
            '}' => depth -= 1,
            ',' if depth == 0 => {
                items.push(&inner[start..i]);
                start = i + 1;
            }
            _ => {}
        }
    }
    items.push(&inner[start..]);
    items
        .into_iter()
        .flat_map(expand)
        .map(|p| match (prefix.is_empty(), p.as_str()) {
            (true, _) => p,
            (false, "self") => prefix.to_owned(),
            (false, _) => format!("{prefix}::{p}"),
        })
        .collect()
}

/// Paths named in `use` items, and `crate::`/`super::` paths in code.
fn named_paths(code: &str) -> (Vec<(String, bool)>, Vec<String>) {
    let mut uses = Vec::new();
    let mut rest = code;
    while let Some(i) = rest.find("use ") {
        let before = &rest[..i];
        let at_item_start = before
            .chars()
            .last()
            .is_none_or(|c| c.is_whitespace() || c == ')' || c == '{' || c == ';');
        let is_pub = before.trim_end().ends_with("pub") || before.trim_end().ends_with(')');
        let after = &rest[i + 4..];
        let Some(end) = after.find(';') else { break };
        // "use " inside a string (a message to a user) is no item.
        let looks_like_path = after
            .trim_start()
            .starts_with(|c: char| c.is_alphanumeric() || c == '_' || c == '{' || c == ':')
            && !after[..end].contains('"');
        if at_item_start && looks_like_path {
            let stmt = after[..end].replace('\n', " ");
            for p in expand(&stmt) {
                uses.push((p, is_pub));
            }
        }
        rest = &after[end..];
    }
    let mut inline = Vec::new();
    for start in ["crate::", "super::"] {
        let mut from = 0;
        while let Some(i) = code[from..].find(start) {
            let at = from + i;
            let ok_before = code[..at]
                .chars()
                .last()
                .is_none_or(|c| !(c.is_alphanumeric() || c == '_' || c == ':'));
            let path: String = code[at..]
                .chars()
                .take_while(|c| c.is_alphanumeric() || *c == '_' || *c == ':')
                .collect();
            // `a::{b, c}` is the head of a use tree, which the `use`
            // items above expand; it names no module of its own.
            let tree_head = code[at + path.len()..].starts_with('{');
            if ok_before && !tree_head {
                inline.push(path.trim_end_matches(':').to_owned());
            }
            from = at + start.len();
        }
    }
    (uses, inline)
}

fn load() -> BTreeMap<ModPath, Module> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut modules = BTreeMap::new();
    let mut raw = Vec::new();
    for file in files {
        if file.ends_with("main.rs") {
            continue; // the binary: it uses the library's public API only
        }
        let m = module_path(&src, &file);
        let code = production(&std::fs::read_to_string(&file).unwrap());
        raw.push((m.clone(), code));
        modules.insert(
            m,
            Module {
                file: file.strip_prefix(&src).unwrap().to_owned(),
                reexports: BTreeMap::new(),
                uses: Vec::new(),
            },
        );
    }
    let known: BTreeSet<ModPath> = modules.keys().cloned().collect();
    for (m, code) in raw {
        let (uses, inline) = named_paths(&code);
        let is_facade = modules[&m].file.ends_with("mod.rs");
        let mut abs = Vec::new();
        for (p, is_pub) in uses {
            let Some(path) = absolute(&m, &p, &known) else {
                continue;
            };
            // `pub use child::Item` in a folder's mod.rs re-exports.
            if is_facade && is_pub && path.len() == m.len() + 2 && path.starts_with(&m) {
                let child = path[m.len()].clone();
                if known.contains(&[m.clone(), vec![child.clone()]].concat()) {
                    let name = path.last().unwrap().clone();
                    modules.get_mut(&m).unwrap().reexports.insert(name, child);
                }
            }
            abs.push(path);
        }
        for p in inline {
            abs.extend(absolute(&m, &p, &known));
        }
        modules.get_mut(&m).unwrap().uses = abs;
    }
    modules
}

/// A path as seen from module `from`, made absolute; None for paths into
/// other crates.
fn absolute(from: &ModPath, path: &str, known: &BTreeSet<ModPath>) -> Option<ModPath> {
    let segs: Vec<&str> = path.split("::").filter(|s| !s.is_empty()).collect();
    let mut base: ModPath = Vec::new();
    let mut i = 0;
    match segs.first()? {
        &"crate" => i = 1,
        &"self" => {
            base = from.clone();
            i = 1;
        }
        &"super" => {
            base = from.clone();
            while segs.get(i) == Some(&"super") {
                base.pop();
                i += 1;
            }
        }
        first => {
            // A child module of `from`, used by its relative name.
            let child = [from.clone(), vec![first.to_string()]].concat();
            if !known.contains(&child) {
                return None;
            }
            base = from.clone();
        }
    }
    let mut out = base;
    out.extend(segs[i..].iter().map(|s| s.to_string()));
    Some(out)
}

/// The file (module) that defines what `path` names.
fn target(modules: &BTreeMap<ModPath, Module>, path: &ModPath) -> ModPath {
    let mut m: ModPath = Vec::new();
    let mut i = 0;
    loop {
        if i < path.len() {
            let next = [m.clone(), vec![path[i].clone()]].concat();
            if modules.contains_key(&next) {
                m = next;
                i += 1;
                continue;
            }
            // Through a facade's re-export to the defining file.
            if let Some(child) = modules[&m].reexports.get(&path[i]) {
                m.push(child.clone());
                continue;
            }
        }
        return m;
    }
}

fn edges(modules: &BTreeMap<ModPath, Module>) -> BTreeMap<ModPath, BTreeSet<ModPath>> {
    let mut g: BTreeMap<ModPath, BTreeSet<ModPath>> = BTreeMap::new();
    for (m, module) in modules {
        let out = g.entry(m.clone()).or_default();
        for p in &module.uses {
            let t = target(modules, p);
            // A module naming its own items, or the crate root (lib.rs
            // only declares modules), is not an edge.
            if &t != m && !t.is_empty() {
                out.insert(t);
            }
        }
    }
    g
}

fn name(m: &ModPath) -> String {
    if m.is_empty() {
        "lib".into()
    } else {
        m.join("::")
    }
}

/// Strongly connected components with more than one module (Tarjan).
fn cycles(g: &BTreeMap<ModPath, BTreeSet<ModPath>>) -> Vec<Vec<String>> {
    struct T<'a> {
        g: &'a BTreeMap<ModPath, BTreeSet<ModPath>>,
        index: BTreeMap<&'a ModPath, usize>,
        low: BTreeMap<&'a ModPath, usize>,
        stack: Vec<&'a ModPath>,
        on: BTreeSet<&'a ModPath>,
        out: Vec<Vec<String>>,
    }
    fn visit<'a>(t: &mut T<'a>, v: &'a ModPath) {
        let n = t.index.len();
        t.index.insert(v, n);
        t.low.insert(v, n);
        t.stack.push(v);
        t.on.insert(v);
        for w in t.g.get(v).into_iter().flatten() {
            if !t.index.contains_key(w) {
                visit(t, w);
                let lw = t.low[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(lw);
            } else if t.on.contains(w) {
                let iw = t.index[w];
                let lv = t.low.get_mut(v).unwrap();
                *lv = (*lv).min(iw);
            }
        }
        if t.low[v] == t.index[v] {
            let mut comp = Vec::new();
            loop {
                let w = t.stack.pop().unwrap();
                t.on.remove(w);
                comp.push(name(w));
                if w == v {
                    break;
                }
            }
            if comp.len() > 1 {
                t.out.push(comp);
            }
        }
    }
    let mut t = T {
        g,
        index: BTreeMap::new(),
        low: BTreeMap::new(),
        stack: Vec::new(),
        on: BTreeSet::new(),
        out: Vec::new(),
    };
    for v in g.keys() {
        if !t.index.contains_key(v) {
            visit(&mut t, v);
        }
    }
    t.out
}

/// Modules outside the layers that every layer may use: they import
/// nothing of spool but each other (metrics; signed-link tokens; media
/// container layouts; playlist and manifest texts).
const LEAVES: [&str; 5] = ["metrics", "history", "signing", "container", "manifest"];

/// The layer of a module: higher may import lower, never the reverse.
/// None for the modules around the layers (the crate root, server wiring,
/// config, commands, metrics), checked separately.
fn layer(m: &ModPath) -> Option<(u8, &str)> {
    match m.first().map(String::as_str) {
        Some("http") => Some((4, "http")),
        Some("cache") => Some((3, "cache")),
        Some("store") => Some((2, "store")),
        Some("upstream") => Some((2, "upstream")),
        Some("disk") => Some((1, "disk")),
        _ => None,
    }
}

#[test]
fn no_module_imports_another_that_imports_it_back() {
    let modules = load();
    assert!(modules.len() > 30, "found only {} modules", modules.len());
    let found = cycles(&edges(&modules));
    assert!(found.is_empty(), "module cycles: {found:?}");
}

#[test]
fn imports_point_down_the_layers() {
    let modules = load();
    let g = edges(&modules);
    let mut wrong = Vec::new();
    for (from, tos) in &g {
        for to in tos {
            let bad = match (layer(from), layer(to)) {
                // Up a layer, or across between store and upstream.
                (Some((lf, nf)), Some((lt, nt))) => nf != nt && lt >= lf,
                // A layer may use the leaves, nothing else outside.
                (Some(_), None) => to.first().is_none_or(|t| !LEAVES.contains(&t.as_str())),
                // The leaves import nothing of spool beyond their own
                // files (a leaf may be a folder) and other leaves.
                (None, _) => from.first().is_some_and(|f| {
                    LEAVES.contains(&f.as_str())
                        && to.first().is_none_or(|t| !LEAVES.contains(&t.as_str()))
                }),
            };
            if bad {
                wrong.push(format!("{} -> {}", name(from), name(to)));
            }
        }
    }
    assert!(wrong.is_empty(), "imports against the layers: {wrong:#?}");
}

/// The checker itself: it must see real edges, and catch a cycle.
#[test]
fn the_checker_sees_edges_and_cycles() {
    let modules = load();
    let g = edges(&modules);
    let has = |from: &str, to: &str| {
        let key: ModPath = from.split("::").map(str::to_owned).collect();
        let to: ModPath = to.split("::").map(str::to_owned).collect();
        g.get(&key).is_some_and(|t| t.contains(&to))
    };
    assert!(has("cache::run", "cache::persist"), "a `use super::` edge");
    assert!(has("http::stream", "cache::handle"), "through a re-export");
    assert!(
        has("cache::persist", "disk::breaker"),
        "a `use crate::` edge"
    );
    let mut looped = g.clone();
    looped
        .entry(vec!["disk".into(), "breaker".into()])
        .or_default()
        .insert(vec!["cache".into(), "persist".into()]);
    assert!(!cycles(&looped).is_empty(), "an added loop is found");
    assert_eq!(
        expand("a::{b, c::{d, e as f}, self}"),
        vec!["a::b", "a::c::d", "a::c::e", "a"]
    );
}

/// Where the HTTP client's name appears in production code: the line
/// numbers of `reqwest` as a path or import (comments cut off).
fn client_mentions(code: &str) -> Vec<usize> {
    code.lines()
        .enumerate()
        .filter(|(_, line)| {
            line.match_indices("reqwest").any(|(i, _)| {
                let before = line[..i].chars().last();
                let after = line[i + "reqwest".len()..].chars().next();
                before.is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
                    && after.is_none_or(|c| !(c.is_alphanumeric() || c == '_'))
            })
        })
        .map(|(n, _)| n + 1)
        .collect()
}

/// Whether a file may name the HTTP client: `upstream/`, which talks to
/// origins, and `cmd/`, the command line's client of spool's own control
/// plane (no origin is reached through it).
fn may_name_the_client(file: &Path) -> bool {
    file.starts_with("upstream") || file.starts_with("cmd")
}

/// No type of the HTTP client above `upstream/`: the layers above see
/// origins' answers as `upstream::Answer` only, so what the client does
/// (redirect checks, timeouts, byte counts) cannot be gone around.
#[test]
fn the_http_client_stays_in_upstream() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mut wrong = Vec::new();
    let mut seen = 0;
    for path in files {
        let rel = path.strip_prefix(&src).unwrap();
        let code = production(&std::fs::read_to_string(&path).unwrap());
        let lines = client_mentions(&code);
        if may_name_the_client(rel) {
            seen += lines.len();
        } else {
            wrong.extend(lines.iter().map(|n| format!("{}:{n}", rel.display())));
        }
    }
    assert!(seen > 0, "the client is named somewhere in upstream/");
    assert!(
        wrong.is_empty(),
        "the HTTP client named above upstream/: {wrong:#?}"
    );
    // The check itself: an import, a path in a type, not a longer name.
    let bad = "use reqwest::StatusCode;\nfn f(r: reqwest::Response) {}\nlet not_reqwest_x = 1;";
    assert_eq!(client_mentions(bad), vec![1, 2]);
    assert!(!may_name_the_client(Path::new("http/stream.rs")));
    assert!(!may_name_the_client(Path::new("cache/open.rs")));
}

/// A folder's `mod.rs` only declares its files and re-exports: whatever
/// else it held would be imported by its own files and import them back.
#[test]
fn folder_modules_only_declare_and_re_export() {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files);
    let mods: Vec<_> = files
        .iter()
        .filter(|p| p.file_name().is_some_and(|n| n == "mod.rs"))
        .collect();
    assert!(mods.len() >= 5, "found only {} mod.rs files", mods.len());
    for path in mods {
        let text = std::fs::read_to_string(path).unwrap();
        for line in production(&text).lines().map(str::trim) {
            let allowed = line.is_empty()
                || line.starts_with("#[")
                || line.starts_with("#![")
                || line.starts_with("mod ")
                || line.starts_with("pub mod ")
                || line.starts_with("pub(crate) mod ")
                || line.starts_with("pub use ")
                || line.starts_with("pub(crate) use ")
                // A re-export's list may go on over several lines.
                || line.ends_with(',')
                || line.ends_with("};");
            assert!(
                allowed,
                "{}: `{line}`: a mod.rs only declares files and re-exports",
                path.display()
            );
        }
    }
}
