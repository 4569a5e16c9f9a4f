//! How Petal picks, names and orders image files — one definition for `petal score`, `eval`,
//! `train` and the web page, so that the same folder gives the same rows everywhere.
//!
//! Everything works on `/`-separated strings as well as on [`Path`]s: the page only has the
//! relative paths the browser reports.

use std::cmp::Ordering;
use std::path::Path;

/// File extensions `petal` looks at (lower case). TIFF is not decoded, but torchvision's
/// ImageFolder lists `.tif`/`.tiff`, so such files are listed too and reported as unsupported
/// by name rather than silently left out of a score or an evaluation.
pub const IMAGE_EXTENSIONS: [&str; 8] = ["jpg", "jpeg", "png", "webp", "gif", "bmp", "tif", "tiff"];

/// Whether a file name (or path) has one of [`IMAGE_EXTENSIONS`], in any case. A folder is
/// searched for these only; a file named explicitly is read whatever its name.
pub fn is_image_name(name: &str) -> bool {
    let last = name.rsplit('/').next().unwrap_or(name);
    last.rsplit_once('.').is_some_and(|(stem, ext)| {
        !stem.is_empty() && IMAGE_EXTENSIONS.contains(&ext.to_ascii_lowercase().as_str())
    })
}

/// [`is_image_name`] for a path.
pub fn is_image(path: &Path) -> bool {
    path.file_name()
        .and_then(|n| n.to_str())
        .is_some_and(is_image_name)
}

/// Whether a path relative to the searched folder passes through a hidden entry (a name
/// starting with `.`, e.g. `.thumbnails/` or `.DS_Store`): those are skipped.
pub fn is_hidden(relative: &str) -> bool {
    relative
        .split('/')
        .any(|c| c.starts_with('.') && c != "." && c != "..")
}

/// The order rows come in: `PathBuf`'s ordering, component by component (so `a/z.jpg` comes
/// before `a.b.png`, as `/` sorts below every other component byte), empty and `.` components
/// ignored.
pub fn compare_paths(a: &str, b: &str) -> Ordering {
    let parts = |p: &str| {
        p.split('/')
            .filter(|c| !c.is_empty() && *c != ".")
            .map(str::to_owned)
            .collect::<Vec<_>>()
    };
    parts(a).cmp(&parts(b))
}

/// A file's name in a result row: its path relative to the folder that was searched, with `/`
/// separators; a path outside that folder keeps its full name.
pub fn relative(path: &Path, root: &Path) -> String {
    let Ok(rel) = path.strip_prefix(root) else {
        return path.display().to_string();
    };
    rel.components()
        .map(|c| c.as_os_str().to_string_lossy())
        .collect::<Vec<_>>()
        .join("/")
}

/// The row name of a file that a browser reports inside a chosen folder (`folder/sub/x.jpg`):
/// relative to that folder (`sub/x.jpg`), as `petal score --images folder` names it.
pub fn folder_relative(path: &str) -> String {
    let parts: Vec<&str> = path.split('/').filter(|c| !c.is_empty()).collect();
    if parts.len() > 1 {
        parts[1..].join("/")
    } else {
        parts.join("/")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::path::PathBuf;

    #[test]
    fn image_names_by_extension_in_any_case() {
        for yes in ["a.jpg", "dir/B.JPEG", "c.Png", "x.y.webp", "t.tif"] {
            assert!(is_image_name(yes), "{yes}");
        }
        for no in ["a.jpe", "jpg", "notes.txt", ".jpg", "dir.png/readme", "a."] {
            assert!(!is_image_name(no), "{no}");
        }
        assert!(is_image(Path::new("/x/y/Z.BMP")));
        assert!(!is_image(Path::new("/x/y/z")));
    }

    #[test]
    fn hidden_entries_anywhere_in_the_path() {
        assert!(is_hidden(".DS_Store"));
        assert!(is_hidden("a/.thumbnails/x.jpg"));
        assert!(!is_hidden("a/b/x.jpg"));
        assert!(!is_hidden("./a/x.jpg"));
    }

    /// The page sorts strings with `compare_paths`; `petal score` sorts `PathBuf`s. They must
    /// agree, or the two CSVs list the same files in different orders.
    #[test]
    fn compare_paths_is_pathbuf_order() {
        let names = [
            "b.png",
            "a/z.jpg",
            "a.b.png",
            "a/b/c.jpg",
            "a-b.png",
            "A.png",
            "a/ä.png",
            "a0.png",
            "a/.png",
            "ab/c.png",
            "a b.png",
        ];
        let mut by_str: Vec<&str> = names.to_vec();
        by_str.sort_by(|a, b| compare_paths(a, b));
        let mut by_path: Vec<PathBuf> = names.iter().map(PathBuf::from).collect();
        by_path.sort();
        let by_path: Vec<String> = by_path.iter().map(|p| p.display().to_string()).collect();
        assert_eq!(by_str, by_path);
    }

    #[test]
    fn names_are_relative_to_the_searched_folder() {
        assert_eq!(
            relative(Path::new("/d/test/a/b.jpg"), Path::new("/d/test")),
            "a/b.jpg"
        );
        assert_eq!(relative(Path::new("/e/x.jpg"), Path::new("/d")), "/e/x.jpg");
        assert_eq!(folder_relative("photos/a/b.jpg"), "a/b.jpg");
        assert_eq!(folder_relative("b.jpg"), "b.jpg");
    }
}
