//! Stateful writer and reader over a stream of boxes in one context.
//!
//! Both keep the next index and move it only when the caller says the box
//! went through (writer) or when a box opened (reader), so a failed send or a
//! forged box never skips a position. To survive a restart, store the cap and
//! [`Writer::next_index`] / [`Reader::next_index`], then `resume`.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

use crate::{
    BoxContent, BoxId, BoxSignature, Error, MessageBoxIndex, ReadCap, SealedBox, WriteCap,
};

/// Writes boxes one after another along a write cap's stream.
#[derive(Clone)]
pub struct Writer {
    cap: WriteCap,
    ctx: Zeroizing<Vec<u8>>,
    next: MessageBoxIndex,
}

impl Writer {
    /// A writer starting at the cap's own index.
    pub fn new(cap: WriteCap, ctx: &[u8]) -> Self {
        let next = cap.index().clone();
        Writer {
            cap,
            ctx: Zeroizing::new(ctx.to_vec()),
            next,
        }
    }

    /// A writer continuing at `next`, which must lie on the cap's stream.
    pub fn resume(cap: WriteCap, ctx: &[u8], next: MessageBoxIndex) -> Result<Self, Error> {
        cap.contains(&next)?;
        Ok(Writer {
            cap,
            ctx: Zeroizing::new(ctx.to_vec()),
            next,
        })
    }

    /// The index the next box will be written at.
    pub fn next_index(&self) -> &MessageBoxIndex {
        &self.next
    }

    /// The ID of the next box.
    pub fn next_box_id(&self) -> BoxId {
        self.cap.box_id(&self.next, &self.ctx)
    }

    /// Seals `plaintext` as the next box without moving on: call
    /// [`Writer::advance`] once the box is stored.
    pub fn prepare(&self, plaintext: &[u8]) -> SealedBox {
        self.cap.seal(&self.next, &self.ctx, plaintext)
    }

    /// The tombstone for the next box, without moving on.
    pub fn prepare_tombstone(&self) -> SealedBox {
        self.cap.tombstone(&self.next, &self.ctx)
    }

    /// Moves to the following index.
    pub fn advance(&mut self) -> Result<(), Error> {
        self.next = self.next.next()?;
        Ok(())
    }

    /// Seals `plaintext` as the next box and moves on. Fails, writing nothing,
    /// only when the stream is exhausted.
    pub fn seal_next(&mut self, plaintext: &[u8]) -> Result<SealedBox, Error> {
        let following = self.next.next()?;
        let sealed = self.prepare(plaintext);
        self.next = following;
        Ok(sealed)
    }
}

impl std::fmt::Debug for Writer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Writer")
            .field("cap", &self.cap)
            .field("next_idx64", &self.next.idx64())
            .finish_non_exhaustive()
    }
}

/// Reads boxes one after another along a read cap's stream.
///
/// The next box's ID is derived once per position (it is what the caller
/// fetches) and kept, so opening a box costs a signature check and a
/// decryption, not a second blinding.
#[derive(Clone)]
pub struct Reader {
    cap: ReadCap,
    ctx: Zeroizing<Vec<u8>>,
    next: MessageBoxIndex,
    next_id: BoxId,
}

impl Reader {
    /// A reader starting at the cap's own index.
    pub fn new(cap: ReadCap, ctx: &[u8]) -> Self {
        let next = cap.index().clone();
        Self::at(cap, ctx, next)
    }

    /// A reader continuing at `next`, which must lie on the cap's stream.
    pub fn resume(cap: ReadCap, ctx: &[u8], next: MessageBoxIndex) -> Result<Self, Error> {
        cap.contains(&next)?;
        Ok(Self::at(cap, ctx, next))
    }

    fn at(cap: ReadCap, ctx: &[u8], next: MessageBoxIndex) -> Self {
        let next_id = cap.box_id(&next, ctx);
        Reader {
            cap,
            ctx: Zeroizing::new(ctx.to_vec()),
            next,
            next_id,
        }
    }

    /// The index of the next box to read.
    pub fn next_index(&self) -> &MessageBoxIndex {
        &self.next
    }

    /// The ID of the next box to fetch.
    pub fn next_box_id(&self) -> BoxId {
        self.next_id
    }

    /// Opens the next box without moving on: checks that `id` is the next
    /// box's, then the signature, then decrypts.
    pub fn peek(
        &self,
        id: &BoxId,
        ciphertext: &[u8],
        signature: &BoxSignature,
    ) -> Result<BoxContent, Error> {
        if !bool::from(self.next_id.0.ct_eq(&id.0)) {
            return Err(Error::BoxMismatch);
        }
        self.next.decrypt(&self.ctx, id, ciphertext, signature)
    }

    /// Opens the next box and, only if it opens, moves on. The box at the
    /// very last index (2^64 - 1) can only be [`Reader::peek`]ed.
    pub fn open_next(
        &mut self,
        id: &BoxId,
        ciphertext: &[u8],
        signature: &BoxSignature,
    ) -> Result<BoxContent, Error> {
        let following = self.next.next()?;
        let content = self.peek(id, ciphertext, signature)?;
        self.next_id = self.cap.box_id(&following, &self.ctx);
        self.next = following;
        Ok(content)
    }
}

impl std::fmt::Debug for Reader {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reader")
            .field("cap", &self.cap)
            .field("next_idx64", &self.next.idx64())
            .finish_non_exhaustive()
    }
}
