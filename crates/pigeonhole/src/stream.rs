//! A byte stream as a sequence of equal-sized BACAP box payloads: the first
//! box starts with the stream's length (u64 LE), the last is zero padded,
//! so every box of every stream has the same size.

/// Bytes of the length header in the first box.
pub const HEADER_LEN: usize = 8;

/// Why a stream does not reassemble.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum StreamError {
    /// The first box is shorter than its header or boxes differ in size.
    #[error("box of the wrong size")]
    WrongSize,
    /// A stream length that its boxes cannot hold, or absurdly large.
    #[error("stream length {0} does not fit its boxes")]
    BadLength(u64),
}

/// Cuts `data` into boxes of `box_len` bytes each.
pub fn split(data: &[u8], box_len: usize) -> Vec<Vec<u8>> {
    assert!(box_len > HEADER_LEN, "boxes must hold more than the header");
    let mut all = Vec::with_capacity(HEADER_LEN + data.len());
    all.extend_from_slice(&(data.len() as u64).to_le_bytes());
    all.extend_from_slice(data);
    all.chunks(box_len)
        .map(|chunk| {
            let mut b = chunk.to_vec();
            b.resize(box_len, 0);
            b
        })
        .collect()
}

/// The stream's length and number of boxes, from its first box. Streams
/// longer than `max_len` are refused.
pub fn length(first: &[u8], max_len: u64) -> Result<(u64, usize), StreamError> {
    if first.len() <= HEADER_LEN {
        return Err(StreamError::WrongSize);
    }
    let len = u64::from_le_bytes(first[..HEADER_LEN].try_into().expect("8 bytes"));
    let total = (HEADER_LEN as u64)
        .checked_add(len)
        .filter(|_| len <= max_len)
        .ok_or(StreamError::BadLength(len))?;
    let boxes = total.div_ceil(first.len() as u64);
    Ok((len, boxes.max(1) as usize))
}

/// Joins a whole stream's boxes back into its bytes.
pub fn join(boxes: &[Vec<u8>]) -> Result<Vec<u8>, StreamError> {
    let first = boxes.first().ok_or(StreamError::WrongSize)?;
    let (len, count) = length(first, u64::MAX)?;
    if count != boxes.len() || boxes.iter().any(|b| b.len() != first.len()) {
        return Err(StreamError::WrongSize);
    }
    let mut out: Vec<u8> = boxes.concat();
    out.drain(..HEADER_LEN);
    out.truncate(len as usize);
    Ok(out)
}
