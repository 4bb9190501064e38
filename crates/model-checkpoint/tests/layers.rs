//! The direction of dependencies between the layers (docs/ARCHITECTURE.md), checked on the
//! source: the file system is touched only by the local storage backend, `policy` and
//! `template` are pure, and nothing below the callback layer reaches up into it. The
//! candle crate reads checkpoint metadata only through the core's types.

use std::path::{Path, PathBuf};

fn sources(dir: &Path) -> Vec<PathBuf> {
    if dir.is_file() {
        return vec![dir.to_path_buf()];
    }
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).expect("list") {
        let path = entry.expect("entry").path();
        if path.is_dir() {
            out.extend(sources(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out.sort();
    out
}

/// Every line of the crate's sources under `sub` that contains one of `needles`, outside
/// comments, as `path:line: text`.
fn offending(root: &Path, sub: &str, needles: &[&str], except: &[&str]) -> Vec<String> {
    let base = root.join(sub);
    let mut found = Vec::new();
    for file in sources(&base) {
        let relative = file
            .strip_prefix(root)
            .expect("inside")
            .to_string_lossy()
            .into_owned();
        if except.iter().any(|e| relative.starts_with(e)) {
            continue;
        }
        let text = std::fs::read_to_string(&file).expect("read");
        for (i, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            if needles.iter().any(|n| code.contains(n)) {
                found.push(format!("{relative}:{}: {}", i + 1, line.trim()));
            }
        }
    }
    found
}

fn core() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("src")
}

#[test]
fn only_the_local_backend_touches_the_file_system() {
    let touches = [
        "std::fs",
        "fs::",
        ".is_dir()",
        ".is_file()",
        ".exists()",
        ".canonicalize()",
        "read_dir(",
        "symlink_metadata",
    ];
    let found = offending(&core(), "", &touches, &["store/local/"]);
    assert!(
        found.is_empty(),
        "file-system calls outside store/local/:\n{}",
        found.join("\n")
    );
}

#[test]
fn policy_and_template_are_pure_and_depend_on_nothing_above() {
    let impure = [
        "std::fs",
        "std::io",
        "std::thread",
        "std::time",
        "crate::checkpoint",
        "crate::callback",
        "crate::store",
        "candle",
    ];
    for layer in ["policy", "template"] {
        let found = offending(&core(), layer, &impure, &[]);
        assert!(
            found.is_empty(),
            "{layer} reaches out:\n{}",
            found.join("\n")
        );
    }
    // The store knows nothing of Keras or of callbacks.
    let found = offending(
        &core(),
        "store",
        &["crate::checkpoint", "crate::callback"],
        &[],
    );
    assert!(found.is_empty(), "store reaches up:\n{}", found.join("\n"));
}

/// The source folders of every crate of the workspace, relative to `crates/`.
const CRATES: [&str; 6] = [
    "model-checkpoint/src",
    "model-checkpoint-fit/src",
    "model-checkpoint-candle/src",
    "model-checkpoint-burn/src",
    "model-checkpoint-object-store/src",
    "ckpt/src",
];

#[test]
fn metadata_and_section_keys_are_spelled_only_by_their_owners() {
    // The `__metadata__` keys are `store::Meta`'s (meta.rs), the training state's sections
    // the typed document's (document.rs); everyone else reads them through those types
    // (`CheckpointFile::meta`, `CheckpointFile::training_state`), so that a third adapter
    // needs no string of its own to stay interoperable.
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let keys = [
        "\"training_state\"",
        "\"callbacks\"",
        "\"optimizer\"",
        "\"optimizer/\"",
        "\"loop\"",
        "\"learner\"",
        "get(\"global_step\")",
        "get(\"run_id\")",
        "get(\"epoch\")",
        "get(\"logs\")",
        "get(\"monitor\")",
        "info().get(\"",
        "info()[\"",
        ".get(\"callbacks\")",
    ];
    let mut found = Vec::new();
    for krate in CRATES {
        found.extend(offending(
            &crates,
            krate,
            &keys,
            &[
                "model-checkpoint/src/store/meta.rs",
                "model-checkpoint/src/document.rs",
                // The journal is a CSV document of its own, with its own column names.
                "model-checkpoint/src/checkpoint/engine/journal.rs",
                "ckpt/src/report/",
            ],
        ));
    }
    assert!(
        found.is_empty(),
        "metadata or section keys spelled outside their owner:\n{}",
        found.join("\n")
    );
}

#[test]
fn keras_decisions_touch_no_storage() {
    // The half of ModelCheckpoint the Keras traces check decides only: it reaches neither
    // the saving engine nor storage.
    let found = offending(
        &core(),
        "checkpoint/decisions.rs",
        &[
            "engine",
            "Storage",
            "storage",
            "std::fs",
            "std::io",
            "background",
        ],
        &[],
    );
    assert!(
        found.is_empty(),
        "Keras's decisions reach into saving:\n{}",
        found.join("\n")
    );
}

#[test]
fn every_delete_goes_through_the_gate() {
    // `Storage::delete` is called by the deletion gate alone (and implemented by the
    // backends); everything else deletes through `store::gate`, which checks that the
    // object is what the caller says it is. The other crates are checked too.
    let crates = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("..");
    let calls = [
        ".delete(&",
        ".delete(name",
        "storage.delete(",
        "remove_file(",
        "remove_dir(",
    ];
    let mut found = Vec::new();
    for krate in CRATES {
        found.extend(offending(
            &crates,
            krate,
            &calls,
            &[
                "model-checkpoint/src/store/gate.rs",
                // The backends: their own `delete`, and their own temporary files.
                "model-checkpoint/src/store/local/",
                // The object store's `Storage::delete`, the gate's way to the server, is its
                // only raw delete; breaking a lock (`lock.rs`), releasing one's own lock or
                // claim, everything else there goes through the gate and is checked here.
                "model-checkpoint-object-store/src/lib.rs",
                // The benchmarks remove the scratch files they made themselves.
                "ckpt/src/bench/",
            ],
        ));
    }
    assert!(
        found.is_empty(),
        "deletes that bypass store::gate:\n{}",
        found.join("\n")
    );
}

/// The top-level modules of the crate at `src` that each module's code names
/// (`crate::x`, `super::x` at the top), outside comments.
fn module_graph(
    src: &Path,
) -> std::collections::BTreeMap<String, std::collections::BTreeSet<String>> {
    let mut modules: Vec<String> = std::fs::read_dir(src)
        .expect("list")
        .filter_map(|e| {
            let path = e.expect("entry").path();
            let name = path.file_stem()?.to_string_lossy().into_owned();
            (path.is_dir() || path.extension().is_some_and(|x| x == "rs"))
                .then_some(name)
                .filter(|n| n != "lib" && n != "main")
        })
        .collect();
    modules.sort();
    modules.dedup();
    let mut graph = std::collections::BTreeMap::new();
    for module in &modules {
        let dir = src.join(module);
        let files = if dir.is_dir() {
            sources(&dir)
        } else {
            vec![src.join(format!("{module}.rs"))]
        };
        let mut uses = std::collections::BTreeSet::new();
        for file in files {
            let text = std::fs::read_to_string(&file).expect("read");
            for line in text.lines() {
                let code = line.split("//").next().unwrap_or("");
                for other in &modules {
                    if other != module && code.contains(&format!("crate::{other}")) {
                        uses.insert(other.clone());
                    }
                }
            }
        }
        graph.insert(module.clone(), uses);
    }
    graph
}

/// A cycle in `graph`, as the modules along it.
fn cycle(
    graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
) -> Option<Vec<String>> {
    fn visit(
        node: &str,
        graph: &std::collections::BTreeMap<String, std::collections::BTreeSet<String>>,
        path: &mut Vec<String>,
        done: &mut std::collections::BTreeSet<String>,
    ) -> Option<Vec<String>> {
        if let Some(i) = path.iter().position(|p| p == node) {
            let mut found = path[i..].to_vec();
            found.push(node.to_owned());
            return Some(found);
        }
        if done.contains(node) {
            return None;
        }
        path.push(node.to_owned());
        for next in graph.get(node).into_iter().flatten() {
            if let Some(found) = visit(next, graph, path, done) {
                return Some(found);
            }
        }
        path.pop();
        done.insert(node.to_owned());
        None
    }
    let mut done = std::collections::BTreeSet::new();
    graph
        .keys()
        .find_map(|node| visit(node, graph, &mut Vec::new(), &mut done))
}

#[test]
fn no_circles_between_modules() {
    // The core's and fit's top-level modules name each other one way only. The one error
    // type every module returns (`error.rs`) is left out: it names the types it reports.
    for krate in ["model-checkpoint/src", "model-checkpoint-fit/src"] {
        let src = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("..")
            .join(krate);
        let mut graph = module_graph(&src);
        graph.remove("error");
        for uses in graph.values_mut() {
            uses.remove("error");
        }
        assert!(
            cycle(&graph).is_none(),
            "{krate}: modules in a circle: {:?}\n{graph:#?}",
            cycle(&graph)
        );
    }
}

#[test]
fn keras_texts_are_spelled_only_by_the_keras_rules() {
    // Every text Keras prints, warns or (for Keras 3) raises lives in `checkpoint/keras/`,
    // so that each Keras is one module there.
    let texts = [
        "saving model to",
        "did not improve from",
        "improved from",
        "Can save best model only",
        "fallback to auto mode",
        // Keras 3 only.
        "finished saving model to",
        "isn't able to automatically determine",
        "got an unexpected keyword argument",
        "Expected save_freq are 'epoch'",
        "must end in `.weights.h5`",
        "(Keras model format)",
        "object is not callable",
        "must be a mapping, not NoneType",
        "is not iterable",
    ];
    let found = offending(&core(), "", &texts, &["checkpoint/keras/"]);
    assert!(
        found.is_empty(),
        "Keras texts outside checkpoint/keras/:\n{}",
        found.join("\n")
    );
}
