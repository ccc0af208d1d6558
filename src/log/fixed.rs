//! A line's buffer: `N` bytes (`LINE_MAX` unless said) on the stack that are written before they
//! are read and never zeroed, so that a log line touches only the stack it fills. A child that
//! logs its close line would otherwise write, and so copy after fork, whole 4 KiB pages of the
//! parent's stack.

use std::mem::MaybeUninit;

/// Writes of at most `PIPE_BUF` (4096 on Linux) bytes to a pipe are atomic: a line is at most
/// this long.
pub const LINE_MAX: usize = 4096;

pub struct Fixed<const N: usize = LINE_MAX> {
    bytes: [MaybeUninit<u8>; N],
    /// `bytes[..len]` are written.
    len: usize,
}

impl<const N: usize> Fixed<N> {
    pub fn new() -> Fixed<N> {
        Fixed {
            bytes: [MaybeUninit::uninit(); N],
            len: 0,
        }
    }

    pub fn len(&self) -> usize {
        self.len
    }

    /// Appends as much of `data` as fits below `limit` (at most `N`); returns how much.
    pub fn push(&mut self, data: &[u8], limit: usize) -> usize {
        let n = data.len().min(limit.min(N).saturating_sub(self.len));
        // `n` bytes from `data` into `bytes[len..len + n]`, which lies within the array.
        // SAFETY: len + n <= N, and `data` cannot overlap our own array.
        unsafe {
            std::ptr::copy_nonoverlapping(
                data.as_ptr(),
                self.bytes.as_mut_ptr().add(self.len).cast::<u8>(),
                n,
            );
        }
        self.len += n;
        n
    }

    /// Keeps the first `len` bytes.
    pub fn truncate(&mut self, len: usize) {
        self.len = self.len.min(len);
    }

    /// Removes the byte at `at`, moving the rest one to the left.
    pub fn remove(&mut self, at: usize) {
        if at >= self.len {
            return;
        }
        // Moves the written bytes `at + 1..len` to `at..len - 1`.
        // SAFETY: both ranges lie inside the array (at < len), and `copy` allows the overlap.
        unsafe {
            let start = self.bytes.as_mut_ptr().cast::<u8>();
            std::ptr::copy(start.add(at + 1), start.add(at), self.len - at - 1);
        }
        self.len -= 1;
    }

    pub fn as_bytes(&self) -> &[u8] {
        // SAFETY: `bytes[..len]` have been written (`push` and `remove` keep that true).
        unsafe { std::slice::from_raw_parts(self.bytes.as_ptr().cast::<u8>(), self.len) }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pushes_stop_at_the_limit_and_removal_shifts_the_rest() {
        let mut fixed: Fixed = Fixed::new();
        assert_eq!(fixed.push(b"hello", 3), 3);
        assert_eq!(fixed.push(b"lo, world", LINE_MAX), 9);
        assert_eq!(fixed.as_bytes(), b"hello, world");
        fixed.remove(0);
        fixed.remove(4);
        assert_eq!(fixed.as_bytes(), b"ello world");
        fixed.truncate(4);
        assert_eq!(fixed.as_bytes(), b"ello");
        let big = [b'x'; LINE_MAX + 10];
        assert_eq!(fixed.push(&big, LINE_MAX), LINE_MAX - 4);
        assert_eq!(fixed.len(), LINE_MAX);
    }
}
