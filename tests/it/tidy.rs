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

/// Integration tests run in parallel, each on its own loopback range: a `127.0.N` prefix may
/// appear in one test file only (a shared range means two clusters fight over port 4379).
#[test]
fn loopback_ranges_are_not_shared_between_test_files() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/it");
    let mut owner: std::collections::BTreeMap<String, PathBuf> = Default::default();
    let mut clashes = Vec::new();
    for file in rust_files(&root) {
        let text = fs::read_to_string(&file).unwrap();
        // Both spellings: "127.0.N" strings and Ipv4Addr::new(127, 0, N, ..).
        let text = text.replace("127, 0, ", "\"127.0.");
        let mut rest = text.as_str();
        while let Some(pos) = rest.find("\"127.0.") {
            let tail = &rest[pos + 7..];
            let digits: String = tail.chars().take_while(char::is_ascii_digit).collect();
            rest = &tail[digits.len()..];
            if digits.is_empty() {
                continue;
            }
            let prefix = format!("127.0.{digits}");
            match owner.get(&prefix) {
                Some(other) if other != &file => clashes.push(format!(
                    "{prefix} in {} and {}",
                    other.display(),
                    file.display()
                )),
                Some(_) => {}
                None => {
                    owner.insert(prefix, file.clone());
                }
            }
        }
    }
    assert!(
        clashes.is_empty(),
        "shared loopback ranges:\n{}",
        clashes.join("\n")
    );
}
