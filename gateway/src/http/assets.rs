//! The browser pages: the files of `static/dist/`, built into the binary at compile
//! time (or, for developing the pages, read once at start from `public.static_dir`),
//! held in memory and served by exact name. A request path is only ever a key into that
//! map, so there is no traversal (`..`, `%2e%2e`, `%5c`, `//host`) and no listing.

use std::collections::HashMap;
use std::path::Path;

use bytes::Bytes;
use http::{header, HeaderValue, Response, StatusCode};

use super::Body;

/// Most files and bytes loaded (a misconfigured directory cannot eat the memory).
const MAX_FILES: usize = 2_000;
const MAX_TOTAL_BYTES: u64 = 64 << 20;

/// The pages built into the binary: `static/dist/` as it was at compile time (empty
/// when it had not been built; `static/build.sh` builds it).
#[derive(rust_embed::RustEmbed)]
#[folder = "../static/dist/"]
#[allow_missing = true]
struct Embedded;

/// In-memory static files.
#[derive(Debug, Default)]
pub struct Assets {
    files: HashMap<String, (Bytes, &'static str)>,
}

fn content_type(name: &str) -> Option<&'static str> {
    let ext = name.rsplit_once('.').map(|(_, e)| e.to_ascii_lowercase())?;
    Some(match ext.as_str() {
        "html" => "text/html; charset=utf-8",
        "js" | "mjs" => "text/javascript; charset=utf-8",
        "css" => "text/css; charset=utf-8",
        "json" | "map" => "application/json",
        "png" => "image/png",
        "svg" => "image/svg+xml",
        "ico" => "image/x-icon",
        "wasm" => "application/wasm",
        "woff2" => "font/woff2",
        "txt" => "text/plain; charset=utf-8",
        _ => return None,
    })
}

impl Assets {
    /// The pages built into the binary.
    pub fn embedded() -> Assets {
        let mut files = HashMap::new();
        for name in Embedded::iter() {
            let hidden = name.split('/').any(|part| part.starts_with('.'));
            let (Some(ct), false) = (content_type(&name), hidden) else {
                continue;
            };
            if let Some(f) = Embedded::get(&name) {
                files.insert(name.into_owned(), (Bytes::from(f.data.into_owned()), ct));
            }
        }
        if files.is_empty() {
            tracing::warn!("this binary was built without its browser pages (run static/build.sh, then build it again)");
        }
        Assets { files }
    }

    /// Loads every regular file with a known type under `dir` (symlinks are not
    /// followed). A missing directory gives an empty set (pages answer 404).
    pub fn load(dir: &Path) -> Assets {
        let mut files = HashMap::new();
        let mut total = 0u64;
        let mut stack = vec![(dir.to_path_buf(), String::new())];
        while let Some((d, prefix)) = stack.pop() {
            let Ok(entries) = std::fs::read_dir(&d) else {
                continue;
            };
            for e in entries.flatten() {
                let Ok(ft) = e.file_type() else { continue };
                let name = e.file_name().to_string_lossy().into_owned();
                if name.starts_with('.') {
                    continue;
                }
                let key = if prefix.is_empty() {
                    name.clone()
                } else {
                    format!("{prefix}/{name}")
                };
                if ft.is_dir() {
                    stack.push((e.path(), key));
                } else if ft.is_file() {
                    let Some(ct) = content_type(&name) else {
                        continue;
                    };
                    let Ok(bytes) = std::fs::read(e.path()) else {
                        continue;
                    };
                    total += bytes.len() as u64;
                    if files.len() >= MAX_FILES || total > MAX_TOTAL_BYTES {
                        tracing::warn!(dir = %dir.display(), "static directory too large; some files are not served");
                        return Assets { files };
                    }
                    files.insert(key, (Bytes::from(bytes), ct));
                }
            }
        }
        if files.is_empty() {
            tracing::warn!(dir = %dir.display(), "no browser pages found (build them with static/build.sh)");
        }
        Assets { files }
    }

    pub fn len(&self) -> usize {
        self.files.len()
    }

    pub fn is_empty(&self) -> bool {
        self.files.is_empty()
    }

    /// The response for file `name` (exact key), if there is one.
    pub fn get(&self, name: &str) -> Option<Response<Body>> {
        let (bytes, ct) = self.files.get(name)?;
        let mut r = Response::new(super::error::full(bytes.clone()));
        *r.status_mut() = StatusCode::OK;
        r.headers_mut()
            .insert(header::CONTENT_TYPE, HeaderValue::from_static(ct));
        Some(r)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn serves_only_exact_names() {
        let dir = tempfile::tempdir().expect("tmp");
        std::fs::create_dir_all(dir.path().join("sub")).expect("mkdir");
        std::fs::write(dir.path().join("share.html"), "<p>hi</p>").expect("w");
        std::fs::write(dir.path().join("sub/app.js"), "x()").expect("w");
        std::fs::write(dir.path().join("secret.key"), "k").expect("w");
        std::fs::write(dir.path().join(".hidden.js"), "h").expect("w");
        let outside = tempfile::tempdir().expect("tmp");
        std::fs::write(outside.path().join("passwd.txt"), "root").expect("w");
        std::os::unix::fs::symlink(
            outside.path().join("passwd.txt"),
            dir.path().join("link.txt"),
        )
        .expect("ln");
        let a = Assets::load(dir.path());
        assert_eq!(a.len(), 2);
        let r = a.get("share.html").expect("page");
        assert_eq!(
            r.headers()[header::CONTENT_TYPE],
            "text/html; charset=utf-8"
        );
        assert!(a.get("sub/app.js").is_some());
        for bad in [
            "secret.key",
            ".hidden.js",
            "link.txt",
            "../share.html",
            "sub/../share.html",
            "%2e%2e/share.html",
            "sub\\app.js",
            "/share.html",
            "",
            "sub",
            "sub/",
        ] {
            assert!(a.get(bad).is_none(), "{bad:?} was served");
        }
    }

    #[test]
    fn missing_directory_is_empty() {
        assert!(Assets::load(Path::new("/nonexistent/dist")).is_empty());
    }
}
