//! Reading what a peer answers with a size cap: an upstream or an identity provider is a
//! network input like any other, and an endless or oversized body must be a clear error, not
//! memory growth.

/// Why an answer was not read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    #[error("the answer is larger than the {cap}-byte cap ({seen} bytes and more)")]
    TooLarge { cap: u64, seen: u64 },
    #[error("reading the answer failed: {0}")]
    Read(#[from] reqwest::Error),
}

/// The whole body, refused as soon as it passes `cap` bytes (a `Content-Length` over the cap
/// is refused before reading anything).
pub async fn read_capped(mut resp: reqwest::Response, cap: u64) -> Result<bytes::Bytes, BodyError> {
    if let Some(len) = resp.content_length()
        && len > cap
    {
        return Err(BodyError::TooLarge { cap, seen: len });
    }
    let mut body = bytes::BytesMut::new();
    while let Some(chunk) = resp.chunk().await? {
        let seen = (body.len() + chunk.len()) as u64;
        if seen > cap {
            return Err(BodyError::TooLarge { cap, seen });
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body.freeze())
}

/// At most the first `n` bytes of the body, as text for an error message (the rest is not
/// read; a failed read ends the text early).
pub async fn read_prefix(mut resp: reqwest::Response, n: usize) -> String {
    let mut body = Vec::new();
    while body.len() < n {
        match resp.chunk().await {
            Ok(Some(chunk)) => body.extend_from_slice(&chunk),
            _ => break,
        }
    }
    body.truncate(n);
    String::from_utf8_lossy(&body).into_owned()
}
