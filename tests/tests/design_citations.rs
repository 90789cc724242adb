//! Sources and documents cite DESIGN.md, some by section ("The
//! simulator"): the file is in the repository, and every section cited is
//! one of its headings. (Issue 11 found files citing a DESIGN.md that was
//! not there.)

use std::path::{Path, PathBuf};

/// The repository's root: this crate's parent.
fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Every `.rs` and `.md` file under `dir`, leaving out build output and
/// installed packages.
fn sources(dir: &Path, found: &mut Vec<PathBuf>) {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return;
    };
    for entry in entries.flatten() {
        let path = entry.path();
        let name = entry.file_name();
        let name = name.to_string_lossy();
        if path.is_dir() {
            if !matches!(name.as_ref(), "target" | "node_modules" | ".git") {
                sources(&path, found);
            }
        } else if name.ends_with(".rs") || name.ends_with(".md") {
            found.push(path);
        }
    }
}

/// The text with comment markers gone and lines joined, so that a citation
/// wrapped over two comment lines reads as one.
fn flattened(text: &str) -> String {
    text.lines()
        .map(|line| {
            let line = line.trim_start();
            ["//!", "///", "//"]
                .iter()
                .find_map(|marker| line.strip_prefix(marker))
                .unwrap_or(line)
                .trim()
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// The section titles cited as `DESIGN.md, "Title"`.
fn cited_sections(text: &str) -> Vec<String> {
    let flat = flattened(text);
    flat.match_indices("DESIGN.md, \"")
        .filter_map(|(at, cite)| {
            let rest = flat.get(at + cite.len()..)?;
            rest.split_once('"').map(|(title, _)| title.to_owned())
        })
        .collect()
}

#[test]
fn every_design_md_citation_names_a_section_of_the_file() {
    let root = root();
    let design = std::fs::read_to_string(root.join("DESIGN.md"))
        .unwrap_or_else(|err| panic!("DESIGN.md is cited but cannot be read: {err}"));
    let headings: Vec<&str> = design
        .lines()
        .filter_map(|line| line.strip_prefix("## "))
        .collect();
    let mut files = Vec::new();
    sources(&root, &mut files);
    let mut citing = 0;
    let mut missing = Vec::new();
    for file in &files {
        let Ok(text) = std::fs::read_to_string(file) else {
            continue;
        };
        if file.ends_with("design_citations.rs") || !text.contains("DESIGN.md") {
            continue;
        }
        citing += 1;
        for section in cited_sections(&text) {
            if !headings.contains(&section.as_str()) {
                missing.push(format!("{}: \"{section}\"", file.display()));
            }
        }
    }
    assert!(
        citing > 0,
        "no file cites DESIGN.md: the walk found nothing"
    );
    assert!(
        missing.is_empty(),
        "sections cited that DESIGN.md does not have ({headings:?}):\n{}",
        missing.join("\n")
    );
}

#[test]
fn a_citation_wrapped_over_comment_lines_is_read_whole() {
    let text = "/// An invariant (DESIGN.md, \"The\n/// simulator\").";
    assert_eq!(cited_sections(text), vec!["The simulator".to_owned()]);
}
