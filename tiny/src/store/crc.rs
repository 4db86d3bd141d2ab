//! CRC-32 (IEEE 802.3, reflected, polynomial 0xEDB88320), as zlib computes it.

const TABLE: [u32; 256] = table();

#[allow(clippy::indexing_slicing)] // const fn: `i < 256` is the loop's bound
const fn table() -> [u32; 256] {
    let mut t = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut c = i as u32;
        let mut k = 0;
        while k < 8 {
            c = if c & 1 != 0 {
                0xEDB8_8320 ^ (c >> 1)
            } else {
                c >> 1
            };
            k += 1;
        }
        t[i] = c;
        i += 1;
    }
    t
}

/// CRC-32 of `data`.
pub fn crc32(data: &[u8]) -> u32 {
    crc32_parts(data, &[])
}

/// CRC-32 of `a` followed by `b`.
pub fn crc32_parts(a: &[u8], b: &[u8]) -> u32 {
    let mut c = u32::MAX;
    for &byte in a.iter().chain(b) {
        let i = usize::from((c as u8) ^ byte);
        c = TABLE.get(i).copied().unwrap_or(0) ^ (c >> 8);
    }
    !c
}

#[cfg(test)]
mod tests {
    #[test]
    fn check_value() {
        // The CRC-32 check value of "123456789".
        assert_eq!(super::crc32(b"123456789"), 0xCBF4_3926);
        assert_eq!(super::crc32_parts(b"1234", b"56789"), 0xCBF4_3926);
    }
}
