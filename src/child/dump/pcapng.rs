//! The pcapng file format (draft-ietf-opsawg-pcapng), the three blocks a dump needs: the section
//! header, one interface (raw IP, nanosecond time stamps), and an enhanced packet block per
//! packet, little-endian (the byte-order magic tells readers). Appended to `Recorder`'s buffer,
//! which alone writes them.
//!
//! Written here rather than with a crate: pcap-file 2.0 (tried first) wrote each block through
//! an enum of every block type, sized each by writing it to a sink first, and gathered into a
//! `Vec`; it was 42 KiB of the binary, and with it a dumped connection's child took 48 page
//! faults (a plain one's 12) and 133 µs of CPU more than a plain one; now 28 and 45 µs
//! (benches/README.md, the run of issue 38). These blocks are 60 lines.

use super::gather::Gather;

/// The section header block: byte-order magic, version 1.0, section length unknown.
pub fn section_header(out: &mut Gather) {
    block(out, 0x0A0D_0D0A, |out| {
        out.extend_from_slice(&0x1A2B_3C4Du32.to_le_bytes());
        out.extend_from_slice(&1u16.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&(-1i64).to_le_bytes());
    });
}

/// Link type 101: raw IP, IPv4 or IPv6 by the version nibble.
const LINKTYPE_RAW: u16 = 101;

/// The one interface: raw IP, no snap length, named `name`, time stamps in nanoseconds.
pub fn interface(out: &mut Gather, name: &str) {
    block(out, 1, |out| {
        out.extend_from_slice(&LINKTYPE_RAW.to_le_bytes());
        out.extend_from_slice(&0u16.to_le_bytes());
        out.extend_from_slice(&0u32.to_le_bytes());
        option(out, 2, name.as_bytes());
        // if_tsresol: 10^-9 s.
        option(out, 9, &[9]);
        option(out, 0, &[]);
    });
}

/// One packet, captured whole, at `nanos` since the epoch: what `data` appends to `out`.
pub fn packet(out: &mut Gather, nanos: u64, data: impl FnOnce(&mut Gather)) {
    block(out, 6, |out| {
        out.extend_from_slice(&0u32.to_le_bytes());
        out.extend_from_slice(&((nanos >> 32) as u32).to_le_bytes());
        out.extend_from_slice(&(nanos as u32).to_le_bytes());
        let lengths = out.len();
        out.extend_from_slice(&[0; 8]);
        data(out);
        let len = ((out.len() - lengths - 8) as u32).to_le_bytes();
        out[lengths..lengths + 4].copy_from_slice(&len);
        out[lengths + 4..lengths + 8].copy_from_slice(&len);
        pad(out);
    });
}

/// How many bytes `packet` adds for `len` bytes of data.
pub fn packet_size(len: usize) -> usize {
    32 + len.next_multiple_of(4)
}

/// A block: its type, its total length, the body `body` writes, the total length again.
fn block(out: &mut Gather, kind: u32, body: impl FnOnce(&mut Gather)) {
    let start = out.len();
    out.extend_from_slice(&kind.to_le_bytes());
    out.extend_from_slice(&[0; 4]);
    body(out);
    let total = (out.len() - start + 4) as u32;
    out[start + 4..start + 8].copy_from_slice(&total.to_le_bytes());
    out.extend_from_slice(&total.to_le_bytes());
}

/// An option: its code, its length, its value padded to 4 bytes.
fn option(out: &mut Gather, code: u16, value: &[u8]) {
    out.extend_from_slice(&code.to_le_bytes());
    out.extend_from_slice(&(value.len() as u16).to_le_bytes());
    out.extend_from_slice(value);
    pad(out);
}

fn pad(out: &mut Gather) {
    out.pad_to(out.len().next_multiple_of(4));
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks_are_framed_by_their_length() {
        let mut out = Gather::new().unwrap();
        section_header(&mut out);
        assert_eq!(out.len(), 28);
        interface(&mut out, "forkecho");
        packet(&mut out, 1_765_016_100_123_456_789, |out| {
            out.extend_from_slice(b"hello")
        });
        let out = out.as_slice().to_vec();
        assert_eq!(out.len() % 4, 0);
        let mut at = 0;
        let mut kinds = Vec::new();
        while at < out.len() {
            let word = |i: usize| u32::from_le_bytes(out[i..i + 4].try_into().unwrap());
            let total = word(at + 4) as usize;
            assert_eq!(word(at + total - 4) as usize, total);
            kinds.push(word(at));
            at += total;
        }
        assert_eq!(kinds, [0x0A0D_0D0A, 1, 6]);
        assert_eq!(packet_size(5), 40);
    }
}
