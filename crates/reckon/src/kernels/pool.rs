//! A process-wide pool of `f32` buffers for the Flex kernels, so that a steady-state training or inference step
//! allocates nothing large.
//!
//! Why: glibc `malloc` serves blocks of 32 MiB and more with a fresh `mmap` and hands freed memory back to the
//! kernel, so every large activation would be page-faulted in (and zeroed by the kernel) on every op; the
//! baseline's own measurements show that alone can cost 1.8× on an inference step. The kernels' outputs and
//! saved activations are therefore [`FlexTensor`]s whose storage comes from this pool and goes back to it when
//! burn drops them (through burn's `AllocationController` hook), and their scratch space is taken and returned
//! here too. Buffers are matched by exact length: the recursion repeats the same shapes every step.

use std::collections::HashMap;
use std::mem::MaybeUninit;
use std::sync::Mutex;

use burn::tensor::{DType, Shape};
use burn_flex::{FlexTensor, Layout};
use burn_std::bytes::{AllocationController, AllocationProperty, Bytes};

/// At most this many bytes sit idle in each of the pool's shelves (f32, bf16); beyond it, returned buffers are freed.
const MAX_IDLE_BYTES: usize = 4 << 30;

/// Below this many bytes a buffer is not worth pooling (malloc's own free lists serve it without faults).
const MIN_POOLED_BYTES: usize = 64 * 1024;

/// Idle buffers of one element type, by exact length.
struct Shelf<T> {
    by_len: HashMap<usize, Vec<Vec<T>>>,
    bytes: usize,
}

impl<T> Shelf<T> {
    /// A buffer of `len` from `slot`'s shelf, if it holds one.
    fn take(slot: &Mutex<Option<Self>>, len: usize) -> Option<Vec<T>> {
        if len * std::mem::size_of::<T>() < MIN_POOLED_BYTES {
            return None;
        }
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        let shelf = guard.as_mut()?;
        let buf = shelf.by_len.get_mut(&len).and_then(Vec::pop)?;
        shelf.bytes -= len * std::mem::size_of::<T>();
        Some(buf)
    }

    /// Puts `buf` on `slot`'s shelf, or frees it when it is small or the shelf is full.
    fn give(slot: &Mutex<Option<Self>>, buf: Vec<T>) {
        let (len, bytes) = (buf.len(), std::mem::size_of_val(buf.as_slice()));
        if bytes < MIN_POOLED_BYTES {
            return;
        }
        let mut guard = slot.lock().unwrap_or_else(|e| e.into_inner());
        let shelf = guard.get_or_insert_with(|| Shelf { by_len: HashMap::new(), bytes: 0 });
        if shelf.bytes + bytes <= MAX_IDLE_BYTES {
            shelf.bytes += bytes;
            shelf.by_len.entry(len).or_default().push(buf);
        }
    }
}

static IDLE: Mutex<Option<Shelf<f32>>> = Mutex::new(None);

/// One 1 KiB block of 16-bit values aligned to a cache line: the storage of the bf16 operands' tiles
/// (`gemm/bf16.rs`). A tile whose 64-byte rows straddle two cache lines makes every tile load a split load: measured
/// on the development machine (2026-12-05), four tile loads and four tile products per step ran at a third of the
/// speed from 16-byte-aligned memory (1.07 against 3.13 TFLOP/s on one core).
#[derive(Clone, Copy)]
#[repr(C, align(64))]
pub(crate) struct Bf16Block(pub [u16; 512]);

/// The bf16 operands' blocks, kept apart from the f32 buffers.
static IDLE_BF16: Mutex<Option<Shelf<Bf16Block>>> = Mutex::new(None);

/// A buffer of exactly `len` elements with unspecified contents (a reused one when the pool has it).
pub fn take(len: usize) -> Vec<f32> {
    Shelf::take(&IDLE, len).unwrap_or_else(|| vec![0.0; len])
}

/// Hands a buffer back for reuse.
pub fn give(buf: Vec<f32>) {
    Shelf::give(&IDLE, buf);
}

/// Exactly `len` blocks with unspecified contents, as [`take`].
pub(crate) fn take_bf16(len: usize) -> Vec<Bf16Block> {
    Shelf::take(&IDLE_BF16, len).unwrap_or_else(|| vec![Bf16Block([0; 512]); len])
}

/// Hands bf16 blocks back for reuse, as [`give`].
pub(crate) fn give_bf16(buf: Vec<Bf16Block>) {
    Shelf::give(&IDLE_BF16, buf);
}

/// Frees every idle buffer (e.g. between benchmarks, so one's buffers do not count in the next one's memory).
pub fn release_idle() {
    *IDLE.lock().unwrap_or_else(|e| e.into_inner()) = None;
    *IDLE_BF16.lock().unwrap_or_else(|e| e.into_inner()) = None;
}

/// A buffer taken from the pool for the duration of a scope.
pub struct Scratch(Vec<f32>);

impl Scratch {
    pub fn new(len: usize) -> Self {
        Self(take(len))
    }
}

impl std::ops::Deref for Scratch {
    type Target = [f32];
    fn deref(&self) -> &[f32] {
        &self.0
    }
}

impl std::ops::DerefMut for Scratch {
    fn deref_mut(&mut self) -> &mut [f32] {
        &mut self.0
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

/// Storage of a pooled tensor: returns its buffer to the pool when burn drops the tensor.
struct PooledStorage(Vec<f32>);

impl Drop for PooledStorage {
    fn drop(&mut self) {
        give(std::mem::take(&mut self.0));
    }
}

impl AllocationController for PooledStorage {
    fn alloc_align(&self) -> usize {
        std::mem::align_of::<f32>()
    }

    fn property(&self) -> AllocationProperty {
        AllocationProperty::Other
    }

    unsafe fn memory_mut(&mut self) -> &mut [MaybeUninit<u8>] {
        let len = self.0.len() * 4;
        // SAFETY: the Vec owns `len` initialised bytes; MaybeUninit<u8> has no validity requirement.
        unsafe { std::slice::from_raw_parts_mut(self.0.as_mut_ptr().cast(), len) }
    }

    fn memory(&self) -> &[MaybeUninit<u8>] {
        // SAFETY: as above, read-only.
        unsafe { std::slice::from_raw_parts(self.0.as_ptr().cast(), self.0.len() * 4) }
    }
}

/// A contiguous f32 Flex tensor that owns `buf` (whose length must be the shape's element count).
pub fn tensor(buf: Vec<f32>, shape: impl Into<Shape>) -> FlexTensor {
    let shape = shape.into();
    assert_eq!(buf.len(), shape.num_elements(), "pooled tensor: buffer length does not match its shape");
    let len = buf.len() * 4;
    // SAFETY: `len` is exactly the initialised byte length of the buffer the controller owns.
    let bytes = unsafe { Bytes::from_controller(Box::new(PooledStorage(buf)), len) };
    FlexTensor::new(bytes, Layout::contiguous(shape), DType::F32)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_dropped_pooled_tensor_gives_its_buffer_back() {
        let len = MIN_POOLED_BYTES / 4 + 12_345; // a length no other test uses
        let mut buf = take(len);
        buf[7] = 3.5;
        let ptr = buf.as_ptr();
        let t = tensor(buf, [len]);
        assert_eq!(t.as_slice::<f32>().unwrap()[7], 3.5);
        drop(t);
        let again = take(len);
        assert_eq!(again.as_ptr(), ptr, "the same allocation is reused");
        give(again);
    }
}
