//! What the burn tests share.

use model_checkpoint::NamedTensor;

/// A tensor's bytes, as a checkpoint would hold them.
pub fn bytes_of(t: &NamedTensor<'_>) -> Vec<u8> {
    let mut bytes = Vec::with_capacity(t.data.byte_len());
    t.data
        .write_to(&mut |b| {
            bytes.extend_from_slice(b);
            Ok(())
        })
        .expect("tensor bytes");
    bytes
}
