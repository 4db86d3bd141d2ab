//! Resolving a requested file name inside the TFTP root.

/// Why a file name was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum PathError {
    /// Empty after normalisation.
    Empty,
    /// Contains a NUL byte.
    Nul,
    /// Not UTF-8.
    NotUtf8,
    /// A `..` component.
    Traversal,
    /// Starts with `/` or `\\`: names are relative to the TFTP root.
    Absolute,
    /// Longer than the output buffer.
    TooLong,
}

/// Normalises a requested name to a relative path inside the root, written into `out`.
///
/// `\` is a separator (Windows-style PXE configs); absolute names are refused (a name is
/// relative to the root, so a leading `/` is a client mistake or an attack); empty and `.`
/// components are dropped; `..` anywhere is refused rather than resolved, so no name can leave
/// the root.
pub fn normalize_path<'a>(raw: &[u8], out: &'a mut [u8]) -> Result<&'a str, PathError> {
    if raw.contains(&0) {
        return Err(PathError::Nul);
    }
    let s = core::str::from_utf8(raw).map_err(|_| PathError::NotUtf8)?;
    if s.starts_with(['/', '\\']) {
        return Err(PathError::Absolute);
    }
    let mut len = 0usize;
    for comp in s.split(['/', '\\']) {
        match comp {
            "" | "." => continue,
            ".." => return Err(PathError::Traversal),
            c => {
                if len > 0 {
                    *out.get_mut(len).ok_or(PathError::TooLong)? = b'/';
                    len += 1;
                }
                out.get_mut(len..len + c.len())
                    .ok_or(PathError::TooLong)?
                    .copy_from_slice(c.as_bytes());
                len += c.len();
            }
        }
    }
    if len == 0 {
        return Err(PathError::Empty);
    }
    core::str::from_utf8(out.get(..len).ok_or(PathError::TooLong)?).map_err(|_| PathError::NotUtf8)
}
