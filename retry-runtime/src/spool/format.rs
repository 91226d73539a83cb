//! The on-disk format: segment header, record framing (marker, length, CRC-32, body), and
//! the walk that reads records back and skips damage.

use std::fs::File;
use std::io::{self, Read, Seek, SeekFrom};

use super::*;

/// First bytes of every segment file; the digit is the format version.
pub(super) const SEGMENT_MAGIC: &[u8; 8] = b"RRSPOOL1";
pub(super) const HEADER_LEN: u64 = SEGMENT_MAGIC.len() as u64;
/// Starts every record. 0xFE never occurs in UTF-8, so a task's JSON cannot imitate it when a
/// damaged segment is searched for the next record.
pub(super) const RECORD_MARKER: [u8; 4] = [0xFE, b'R', b'R', 0x01];
/// Marker, length, checksum.
pub(super) const FRAME_OVERHEAD: usize = 12;

/// One Kafka message as the spool keeps it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// Topic to publish to.
    pub topic: String,
    /// Message key (the Redis key: Kafka orders per key).
    pub key: Option<Vec<u8>>,
    /// Message payload.
    pub payload: Vec<u8>,
    /// Headers in order, name and value.
    pub headers: Vec<(String, Option<Vec<u8>>)>,
}

impl Record {
    /// A record without headers.
    #[cfg(test)]
    pub fn new(topic: impl Into<String>, key: Option<Vec<u8>>, payload: Vec<u8>) -> Self {
        Record { topic: topic.into(), key, payload, headers: Vec::new() }
    }

    /// Adds a header.
    #[cfg(test)]
    pub fn header(mut self, name: impl Into<String>, value: Option<Vec<u8>>) -> Self {
        self.headers.push((name.into(), value));
        self
    }

    /// The framed bytes: marker, length, checksum, body.
    pub(super) fn encode(&self) -> Result<Vec<u8>, SpoolError> {
        let size = self.body_size();
        let too_large = || SpoolError::TooLarge(size);
        if size > MAX_RECORD_BYTES {
            return Err(too_large());
        }
        let mut out = Vec::with_capacity(FRAME_OVERHEAD + size);
        out.extend_from_slice(&RECORD_MARKER);
        out.extend_from_slice(&u32::try_from(size).map_err(|_| too_large())?.to_le_bytes());
        out.extend_from_slice(&[0; 4]);
        put_short(&mut out, self.topic.as_bytes()).ok_or_else(too_large)?;
        put_optional(&mut out, self.key.as_deref()).ok_or_else(too_large)?;
        put_long(&mut out, &self.payload).ok_or_else(too_large)?;
        let count = u16::try_from(self.headers.len()).map_err(|_| too_large())?;
        out.extend_from_slice(&count.to_le_bytes());
        for (name, value) in &self.headers {
            put_short(&mut out, name.as_bytes()).ok_or_else(too_large)?;
            put_optional(&mut out, value.as_deref()).ok_or_else(too_large)?;
        }
        let crc = crc32(&[&out[4..8], &out[FRAME_OVERHEAD..]]);
        out[8..12].copy_from_slice(&crc.to_le_bytes());
        Ok(out)
    }

    pub(super) fn body_size(&self) -> usize {
        let optional = |v: &Option<Vec<u8>>| 1 + v.as_ref().map_or(0, |v| 4 + v.len());
        2 + self.topic.len()
            + optional(&self.key)
            + 4
            + self.payload.len()
            + 2
            + self.headers.iter().map(|(n, v)| 2 + n.len() + optional(v)).sum::<usize>()
    }

    /// The body back into a record; `None` for anything that is not exactly one.
    pub(super) fn decode(body: &[u8]) -> Option<Record> {
        let mut r = Reader(body);
        let topic = String::from_utf8(r.short()?.to_vec()).ok()?;
        let key = r.optional()?.map(<[u8]>::to_vec);
        let payload = r.long()?.to_vec();
        let count = r.u16()?;
        let mut headers = Vec::with_capacity(usize::from(count).min(body.len()));
        for _ in 0..count {
            let name = String::from_utf8(r.short()?.to_vec()).ok()?;
            headers.push((name, r.optional()?.map(<[u8]>::to_vec)));
        }
        r.0.is_empty().then_some(Record { topic, key, payload, headers })
    }

    pub(super) fn frame_size(&self) -> usize {
        FRAME_OVERHEAD + self.body_size()
    }
}

pub(super) fn put_short(out: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
    out.extend_from_slice(&u16::try_from(bytes.len()).ok()?.to_le_bytes());
    out.extend_from_slice(bytes);
    Some(())
}

pub(super) fn put_long(out: &mut Vec<u8>, bytes: &[u8]) -> Option<()> {
    out.extend_from_slice(&u32::try_from(bytes.len()).ok()?.to_le_bytes());
    out.extend_from_slice(bytes);
    Some(())
}

pub(super) fn put_optional(out: &mut Vec<u8>, bytes: Option<&[u8]>) -> Option<()> {
    match bytes {
        None => out.push(0),
        Some(bytes) => {
            out.push(1);
            put_long(out, bytes)?;
        }
    }
    Some(())
}

/// Takes fields off the front of a record body; `None` when the body ends too early.
pub(super) struct Reader<'a>(&'a [u8]);

impl<'a> Reader<'a> {
    pub(super) fn bytes(&mut self, n: usize) -> Option<&'a [u8]> {
        if n > self.0.len() {
            return None;
        }
        let (head, rest) = self.0.split_at(n);
        self.0 = rest;
        Some(head)
    }
    pub(super) fn u16(&mut self) -> Option<u16> {
        self.bytes(2).map(|b| u16::from_le_bytes([b[0], b[1]]))
    }
    pub(super) fn u32(&mut self) -> Option<u32> {
        self.bytes(4).map(|b| u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
    }
    pub(super) fn short(&mut self) -> Option<&'a [u8]> {
        let n = self.u16()?;
        self.bytes(usize::from(n))
    }
    pub(super) fn long(&mut self) -> Option<&'a [u8]> {
        let n = self.u32()?;
        self.bytes(usize::try_from(n).ok()?)
    }
    pub(super) fn optional(&mut self) -> Option<Option<&'a [u8]>> {
        match self.bytes(1)?[0] {
            0 => Some(None),
            1 => self.long().map(Some),
            _ => None,
        }
    }
}

/// CRC-32 (IEEE 802.3, as zlib and gzip compute it) of the concatenated `parts`.
pub(super) fn crc32(parts: &[&[u8]]) -> u32 {
    const TABLE: [u32; 256] = {
        let mut table = [0u32; 256];
        let mut i = 0;
        while i < 256 {
            let mut c = i as u32;
            let mut k = 0;
            while k < 8 {
                c = if c & 1 == 1 { 0xEDB8_8320 ^ (c >> 1) } else { c >> 1 };
                k += 1;
            }
            table[i] = c;
            i += 1;
        }
        table
    };
    let crc = parts
        .iter()
        .flat_map(|p| p.iter())
        .fold(!0u32, |c, &b| TABLE[((c ^ u32::from(b)) & 0xFF) as usize] ^ (c >> 8));
    !crc
}

/// What the bytes at the front of a buffer are.
pub(super) enum Parsed {
    /// A whole, checked record of this many bytes.
    Record(Record, usize),
    /// Possibly a record, but the buffer ends before this many bytes.
    Incomplete(usize),
    /// Not a record.
    Corrupt,
}

pub(super) fn parse(buf: &[u8]) -> Parsed {
    let shown = buf.len().min(RECORD_MARKER.len());
    if buf[..shown] != RECORD_MARKER[..shown] {
        return Parsed::Corrupt;
    }
    if buf.len() < FRAME_OVERHEAD {
        return Parsed::Incomplete(FRAME_OVERHEAD);
    }
    let len = u32::from_le_bytes([buf[4], buf[5], buf[6], buf[7]]) as usize;
    if len > MAX_RECORD_BYTES {
        return Parsed::Corrupt;
    }
    let total = FRAME_OVERHEAD + len;
    let Some(frame) = buf.get(..total) else { return Parsed::Incomplete(total) };
    let stored = u32::from_le_bytes([frame[8], frame[9], frame[10], frame[11]]);
    if crc32(&[&frame[4..8], &frame[FRAME_OVERHEAD..]]) != stored {
        return Parsed::Corrupt;
    }
    match Record::decode(&frame[FRAME_OVERHEAD..]) {
        Some(record) => Parsed::Record(record, total),
        None => Parsed::Corrupt,
    }
}

/// Where a walk over a segment's records stopped.
pub(super) struct Walk {
    /// End of the last good record (where the tail begins when `reached_end`).
    pub(super) valid_end: u64,
    /// Bytes skipped between good records.
    pub(super) corrupt: u64,
    /// Whether the walk went to the end rather than being stopped by `take`.
    pub(super) reached_end: bool,
}

pub(super) fn read_at(file: &File, offset: u64, len: usize) -> io::Result<Vec<u8>> {
    let mut reader = file;
    reader.seek(SeekFrom::Start(offset))?;
    let mut buf = Vec::with_capacity(len);
    reader.take(len as u64).read_to_end(&mut buf)?;
    Ok(buf)
}

/// Walks the records of `file` in `from..to`, handing each to `take` with the offset after
/// it, until `take` says stop or `to` is reached. Damage between records is skipped to the
/// next record that checks out; what follows the last good record is left to the caller.
pub(super) fn walk(
    file: &File,
    from: u64,
    to: u64,
    mut take: impl FnMut(Record, u64) -> bool,
) -> io::Result<Walk> {
    let (mut pos, mut valid_end, mut corrupt) = (from, from, 0);
    let (mut buf, mut buf_start) = (Vec::new(), from);
    while pos < to {
        let avail = buf.get((pos - buf_start) as usize..).unwrap_or(&[]);
        match parse(avail) {
            Parsed::Record(record, len) => {
                corrupt += pos - valid_end;
                pos += len as u64;
                valid_end = pos;
                if !take(record, pos) {
                    return Ok(Walk { valid_end, corrupt, reached_end: false });
                }
            }
            Parsed::Incomplete(need) => {
                if pos + need as u64 > to {
                    break;
                }
                let want = (to - pos).min(need.max(READ_WINDOW) as u64) as usize;
                buf = read_at(file, pos, want)?;
                buf_start = pos;
                if buf.len() < need {
                    // The file is shorter than the length we were told: a tail cut short.
                    break;
                }
            }
            Parsed::Corrupt => match find_marker(&avail[1..]) {
                Some(skip) => pos += 1 + skip as u64,
                None => {
                    let buf_end = buf_start + buf.len() as u64;
                    if buf_end >= to {
                        break;
                    }
                    // A marker may straddle the window's edge: look again from its last bytes.
                    pos = (pos + 1).max(buf_end.saturating_sub(RECORD_MARKER.len() as u64 - 1));
                    buf.clear();
                    buf_start = pos;
                }
            },
        }
    }
    Ok(Walk { valid_end, corrupt, reached_end: true })
}

pub(super) fn find_marker(bytes: &[u8]) -> Option<usize> {
    bytes.windows(RECORD_MARKER.len()).position(|w| w == RECORD_MARKER)
}
