//! Repository rules that the compiler cannot check.

use std::fs;
use std::path::{Path, PathBuf};

fn rust_files(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in fs::read_dir(dir).unwrap() {
        let path = entry.unwrap().path();
        if path.is_dir() {
            out.extend(rust_files(&path));
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    out
}

/// `src/protocol` is bytes-to-values only: anything that does I/O, reads the clock or logs
/// belongs in another layer.
#[test]
fn protocol_layer_stays_pure() {
    let forbidden = [
        "libc::",
        "nix::",
        "mio::",
        "log::",
        "std::fs",
        "std::io::Read",
        "std::time",
        "std::process",
        "std::thread",
        "TcpStream",
        "UnixStream",
    ];
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("src/protocol");
    let mut offences = Vec::new();
    for file in rust_files(&root) {
        let text = fs::read_to_string(&file).unwrap();
        for (n, line) in text.lines().enumerate() {
            let code = line.split("//").next().unwrap_or("");
            for word in forbidden {
                if code.contains(word) {
                    offences.push(format!("{}:{}: uses {word}", file.display(), n + 1));
                }
            }
        }
    }
    assert!(
        offences.is_empty(),
        "impure protocol code:\n{}",
        offences.join("\n")
    );
}
