//! How CLI commands print: aligned tables for people, pretty JSON (`-o json`) for scripts.
//! The bottom of the module graph: every capability's CLI uses it, it uses nothing of ours.
//!
//! Owns: CLI tables and JSON. May call: nothing of ours.

use serde::Serialize;

/// Prints rows as an aligned table with a header line.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    emit(&format_table(headers, rows));
}

/// Prints `v` as pretty JSON on stdout.
pub fn print_json(v: &impl Serialize) {
    match serde_json::to_string_pretty(v) {
        Ok(s) => emit(&(s + "\n")),
        Err(err) => eprintln!("error: cannot print JSON: {err}"),
    }
}

/// `println!` for command output: see [`print_text`].
#[macro_export]
macro_rules! outln {
    () => {
        $crate::output::print_text("\n")
    };
    ($($arg:tt)*) => {
        $crate::output::print_text(&(format!($($arg)*) + "\n"))
    };
}

/// `print!` for command output: see [`print_text`].
#[macro_export]
macro_rules! out {
    ($($arg:tt)*) => {
        $crate::output::print_text(&format!($($arg)*))
    };
}

/// Prints `text` on stdout, as [`outln!`] and [`out!`] do. A reader that went away
/// (`rackboot … | head`) ends the command quietly, as for any Unix tool, where `println!`
/// would panic.
pub fn print_text(text: &str) {
    emit(text);
}

/// Writes `text` to stdout. A reader that went away (`rackboot … | head`) ends the command
/// quietly, as it does for any Unix tool, instead of a panic.
fn emit(text: &str) {
    use std::io::Write;
    let mut out = std::io::stdout().lock();
    match out.write_all(text.as_bytes()).and_then(|()| out.flush()) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => std::process::exit(0),
        Err(e) => eprintln!("error: cannot write to stdout: {e}"),
    }
}

/// The table [`print_table`] prints (columns separated by two spaces, last column unpadded).
pub fn format_table(headers: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            let w = cell.chars().count();
            match widths.get_mut(i) {
                Some(cur) => *cur = (*cur).max(w),
                None => widths.push(w),
            }
        }
    }
    let mut out = String::new();
    let header_row: Vec<String> = headers.iter().map(|h| (*h).to_owned()).collect();
    for row in std::iter::once(&header_row).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 < row.len() {
                let w = widths.get(i).copied().unwrap_or(0);
                line.push_str(&format!("{cell:<w$}  "));
            } else {
                line.push_str(cell);
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns() {
        let t = format_table(
            &["NAME", "SIZE"],
            &[
                vec!["kernel".into(), "10".into()],
                vec!["a".into(), "2000".into()],
            ],
        );
        assert_eq!(t, "NAME    SIZE\nkernel  10\na       2000\n");
    }
}
